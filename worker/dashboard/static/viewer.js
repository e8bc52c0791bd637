// The study page's overlay viewer: scroll through slices/frames and switch window presets.
// Our own few lines, no library. Each .viewer element carries its job ID, its number of
// positions and whether they are slices or frames; the image is the server-drawn PNG.
"use strict";
(function () {
  function setup(viewer) {
    var job = viewer.dataset.job;
    var count = parseInt(viewer.dataset.positions, 10);
    var kind = viewer.dataset.kind;
    var image = viewer.querySelector("img.overlay-image");
    var range = viewer.querySelector("input.position");
    var shown = viewer.querySelector("output.position");
    var windows = viewer.querySelector("select.window");

    function show(position) {
      var n = Math.min(Math.max(position, 1), count);
      range.value = String(n);
      shown.textContent = kind + " " + n + "/" + count;
      var query = "slice=" + n;
      if (windows) {
        query += "&window=" + encodeURIComponent(windows.value);
      }
      image.src = "/jobs/" + job + "/overlay.png?" + query;
    }

    function current() {
      return parseInt(range.value, 10);
    }

    viewer.querySelector("button.previous").addEventListener("click", function () {
      show(current() - 1);
    });
    viewer.querySelector("button.next").addEventListener("click", function () {
      show(current() + 1);
    });
    range.addEventListener("input", function () {
      show(current());
    });
    if (windows) {
      windows.addEventListener("change", function () {
        show(current());
      });
    }
    image.addEventListener("wheel", function (event) {
      event.preventDefault();
      show(current() + (event.deltaY > 0 ? 1 : -1));
    });
    viewer.addEventListener("keydown", function (event) {
      if (event.target === range || event.target === windows) {
        return; // those handle their own keys
      }
      var step = { ArrowRight: 1, ArrowDown: 1, PageDown: 10, ArrowLeft: -1, ArrowUp: -1, PageUp: -10 }[event.key];
      if (event.key === "Home") {
        step = 1 - current();
      } else if (event.key === "End") {
        step = count - current();
      }
      if (step) {
        event.preventDefault();
        show(current() + step);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".viewer[data-job]").forEach(setup);
  });
})();
