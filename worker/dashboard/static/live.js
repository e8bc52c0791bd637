// Live pages: every few seconds fetch this page again and swap in each element marked
// data-live (matched by id) whose content changed. Ours, no library; served from the package.
// - Paused while the tab is hidden; refreshed at once when it shows again.
// - A region is left alone while the user types or picks in a form inside it, and once they
//   changed a field there, until the page is reloaded or the form submitted.
// - Stops on a redirect (logged out) or an error status; says so in #live-status.
(function () {
  "use strict";
  var regions = document.querySelectorAll("[data-live]");
  if (!regions.length) {
    return;
  }
  var body = document.body;
  // The period, in seconds, from MEDSEG_DASHBOARD_LIVE_SECONDS (the page's data-live-period).
  var period = 1000 * (parseFloat(body.getAttribute("data-live-period")) || 5);
  var timer = null;
  var inFlight = null;
  var stopped = false;
  var dirty = {};

  function say(text) {
    var status = document.getElementById("live-status");
    if (status) {
      status.textContent = text;
    }
  }

  function busy(region) {
    if (dirty[region.id]) {
      return true;
    }
    var active = document.activeElement;
    return !!active && active !== body && region.contains(active) &&
      /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName) && active.type !== "submit";
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    regions.forEach(function (region) {
      var next = fresh.getElementById(region.id);
      if (next && !busy(region) && next.innerHTML !== region.innerHTML) {
        region.innerHTML = next.innerHTML;
      }
    });
    body.setAttribute("data-live-at", new Date().toISOString());
    // UTC and 24-hour, as the tables' times are: "14:03:27 UTC".
    say("live · updated " + new Date().toISOString().slice(11, 19) + " UTC");
  }

  function stop(reason) {
    stopped = true;
    clearTimeout(timer);
    say("live updates stopped: " + reason + " (reload the page)");
  }

  function poll() {
    timer = null;
    if (stopped || document.hidden) {
      return;
    }
    inFlight = new AbortController();
    fetch(window.location.href, {
      headers: { "X-Medseg-Live": "1" },
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual",
      signal: inFlight.signal
    }).then(function (response) {
      if (response.type === "opaqueredirect" || response.status >= 300) {
        stop(response.type === "opaqueredirect" ? "logged out" : "error " + response.status);
        return null;
      }
      return response.text();
    }).then(function (html) {
      if (html !== null && !stopped) {
        swap(html);
      }
    }).catch(function (error) {
      if (error.name !== "AbortError") {
        say("live · server not answering, trying again");
      }
    }).then(function () {
      inFlight = null;
      schedule();
    });
  }

  function schedule() {
    clearTimeout(timer);
    if (!stopped && !document.hidden) {
      timer = setTimeout(poll, period);
    }
  }

  regions.forEach(function (region) {
    region.addEventListener("input", function () { dirty[region.id] = true; });
    region.addEventListener("change", function () { dirty[region.id] = true; });
  });
  // A form being sent: no poll may answer after it with the session as it was before.
  document.addEventListener("submit", function () {
    stopped = true;
    clearTimeout(timer);
    if (inFlight) {
      inFlight.abort();
    }
  });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      clearTimeout(timer);
      if (inFlight) {
        inFlight.abort();
      }
    } else if (!stopped) {
      poll();
    }
  });
  say("live");
  schedule();
})();
