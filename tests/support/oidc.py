"""A real OpenID Connect provider on 127.0.0.1 for the single sign-on tests: the npm package
oauth2-mock-server (authorization code flow, PKCE, nonce, RS256 ID tokens, JWKS, discovery),
installed once with ``npm install`` into a cache outside the clone, run with node. Its
/authorize answers at once (no login form): the test says whose claims it signs by writing
them to a JSON file, read at every token."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.tools import need
from worker.devtools.localstack import free_port, stop, wait_for_port

PACKAGE = "oauth2-mock-server@9.3.0"
CACHE = Path(os.environ.get("MEDSEG_NPM_CACHE", Path.home() / ".cache" / "medseg" / "npm-oidc"))
_SCRIPT = """
import { readFileSync } from "node:fs";
import { OAuth2Server } from "%s";
const [port, host, claimsFile] = process.argv.slice(2);
const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");
server.service.on("beforeTokenSigning", (token) => {
  Object.assign(token.payload, JSON.parse(readFileSync(claimsFile, "utf8")));
});
server.service.on("beforeUserinfo", (userInfo) => {
  Object.assign(userInfo.body, JSON.parse(readFileSync(claimsFile, "utf8")));
});
await server.start(Number(port), "127.0.0.1");
server.issuer.url = `http://${host}:${port}`;
console.log(`issuer ${server.issuer.url}`);
"""


def installed() -> Path:
    """The package's entry module, installed with npm into CACHE the first time."""
    need("node and npm", bool(shutil.which("node") and shutil.which("npm")))
    entry = CACHE / "node_modules" / "oauth2-mock-server" / "dist" / "index.mjs"
    CACHE.mkdir(parents=True, exist_ok=True)
    # One install at a time: make test runs modules on several processes (pytest-xdist).
    with open(CACHE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not entry.exists():
            done = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), PACKAGE],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            need(f"npm install {PACKAGE} ({done.stderr.strip()[-300:]})", entry.exists())
    return entry


@dataclass
class Provider:
    issuer: str
    claims_file: Path

    def sign_in_as(self, **claims: object) -> None:
        """The claims the next ID token (and userinfo) carries."""
        self.claims_file.write_text(json.dumps(claims))


@contextmanager
def provider(root: Path, host: str = "127.0.0.1") -> Iterator[Provider]:
    """The provider listening on 127.0.0.1; ``host`` is the name its issuer URL uses
    (``localhost``: another site than a dashboard at 127.0.0.1, as in a hospital)."""
    entry = installed()
    script = root / "provider.mjs"
    script.write_text(_SCRIPT % entry.as_uri())
    claims = root / "claims.json"
    claims.write_text("{}")
    port = free_port()
    log = open(root / "provider.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        ["node", str(script), str(port), host, str(claims)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, process=process)
        yield Provider(f"http://{host}:{port}", claims)
    finally:
        stop(process)
        log.close()
