"""Helpers of the sidecar tests: building and running enkf-sidecar, certificates, moto_server,
TLS clusters, SCRAM verifiers and Secrets Manager state."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from pgcluster import Cluster, free_port
from support.pki import Pki, use_cert  # noqa: F401  (re-exported for the sidecar tests)

ROOT = Path(__file__).resolve().parents[2]

REGION = "us-east-1"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


# --- the binary ------------------------------------------------------------------------------


def build_sidecar() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target / "release" / "enkf-sidecar"
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if Path(cargo).exists():
        # Up to date in a second when nothing changed; rebuilds a stale binary otherwise.
        subprocess.run([cargo, "build", "--release", "-p", "enkf-sidecar", "--quiet"], cwd=ROOT, check=True)
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing and cargo is not available to build it")
    return binary


class Sidecar:
    """One configuration of enkf-sidecar; every run appends its stderr (JSON logs) to `log`."""

    def __init__(self, binary: Path, workdir: Path, name: str, config: dict, env: dict | None = None):
        self.binary = binary
        self.config_path = workdir / f"{name}.toml"
        self.log = workdir / f"{name}.log"
        self.config_path.write_text(to_toml(config))
        self.env = {**os.environ, **AWS_ENV, **(env or {})}
        self.env.pop("RUST_LOG", None)
        self.procs: list[subprocess.Popen] = []

    def run(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [str(self.binary), "--config", str(self.config_path), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        with open(self.log, "a") as f:
            f.write(r.stderr)
        return r

    def start(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        logf = open(self.log, "a")
        p = subprocess.Popen(
            [str(self.binary), "--config", str(self.config_path), *(args or ("run",))],
            env={**self.env, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=logf,
        )
        logf.close()
        self.procs.append(p)
        return p

    def stop_all(self, sig=signal.SIGTERM, timeout: float = 60) -> list[int]:
        codes = []
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(sig)
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        self.procs = []
        return codes

    def log_lines(self) -> list[dict]:
        out = []
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"raw": line})
        return out


def to_toml(config: dict) -> str:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, int):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f"{k} = {json.dumps(str(v))}")
    return "\n".join(lines) + "\n"


HBA = [
    "local all all trust",
    # The test's own administration (psql, psycopg as postgres) stays password-less.
    "host all postgres 127.0.0.1/32 trust",
    "host all postgres ::1/128 trust",
    "host all all 127.0.0.1/32 scram-sha-256",
    "host all all ::1/128 scram-sha-256",
]


def tls_cluster(pki: Pki, cert: str = "good", conf: dict | None = None) -> Cluster:
    settings = {
        "ssl": "on",
        "ssl_cert_file": "'server.crt'",
        "ssl_key_file": "'server.key'",
        "log_statement": "'all'",
        "log_connections": "on",
        "password_encryption": "'scram-sha-256'",
        "max_connections": "100",
    }
    settings.update(conf or {})
    c = Cluster(conf=settings, hba=HBA).init()
    use_cert(c, pki, cert, reload=False)
    return c.start()


# --- SCRAM -----------------------------------------------------------------------------------


def scram_verifier(password: str, iterations: int = 4096) -> str:
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b = lambda x: base64.b64encode(x).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b(salt)}${b(stored)}:{b(server)}"


def scram_matches(verifier: str | None, password: str) -> bool:
    """Whether `verifier` (pg_authid.rolpassword) was made from `password`."""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    head, keys = verifier[len("SCRAM-SHA-256$"):].split("$")
    iterations, salt = head.split(":")
    stored = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    mine = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    return base64.b64encode(mine).decode() == stored


def new_password() -> str:
    return secrets.token_urlsafe(24)


# --- moto ------------------------------------------------------------------------------------


class Moto:
    def __init__(self):
        self.port = free_port()
        exe = Path(sys.executable).parent / "moto_server"
        self.log = open(f"/tmp/moto_{self.port}.log", "w")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("moto_server exited")
                time.sleep(0.2)
        else:
            raise RuntimeError("moto_server did not start")
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "secretsmanager",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 10, "mode": "standard"}),
        )

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def stages(sm, secret_id: str) -> dict[str, list[str]]:
    """Version id -> staging labels, for versions that have any."""
    out = {}
    for v in sm.list_secret_version_ids(SecretId=secret_id)["Versions"]:
        if v.get("VersionStages"):
            out[v["VersionId"]] = v["VersionStages"]
    return out


def get_secret(sm, secret_id: str, stage: str = "AWSCURRENT", version: str | None = None) -> tuple[str, dict]:
    kw = {"SecretId": secret_id, "VersionStage": stage}
    if version:
        kw["VersionId"] = version
    r = sm.get_secret_value(**kw)
    return r["VersionId"], json.loads(r["SecretString"])


def all_passwords(sm, secret_id: str) -> set[str]:
    """Every password ever stored in the secret (all versions, labelled or not)."""
    out = set()
    for v in sm.list_secret_version_ids(SecretId=secret_id, IncludeDeprecated=True)["Versions"]:
        r = sm.get_secret_value(SecretId=secret_id, VersionId=v["VersionId"])
        out.add(json.loads(r["SecretString"])["password"])
    return out


def login(secret: dict, ca: Path, **extra) -> str:
    """Logs in over verify-full TLS with these credentials; returns current_user."""
    with psycopg.connect(
        host=secret["host"], port=secret["port"], user=secret["username"], password=secret["password"],
        dbname=secret.get("dbname", "postgres"), sslmode="verify-full", sslrootcert=str(ca), connect_timeout=10,
        **extra,
    ) as c:
        return c.execute("SELECT current_user").fetchone()[0]


def rolpassword(cluster: Cluster, user: str) -> str | None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as c:
        r = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (user,)).fetchone()
        return r[0] if r else None


def setup_rotation(cluster: Cluster, sm, dbname: str, prefix: str) -> dict:
    """Roles enkf_master (CREATEROLE), <prefix>_group and <prefix> (a member of the group), and
    their secrets in Secrets Manager; passwords are set as SCRAM verifiers, never in clear."""
    master_pw, app_pw = new_password(), new_password()
    app = prefix
    with psycopg.connect(cluster.dsn(), autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = 'enkf_master'").fetchone():
            c.execute(f"CREATE ROLE enkf_master LOGIN CREATEROLE PASSWORD '{scram_verifier(master_pw)}'")
        else:
            c.execute(f"ALTER ROLE enkf_master PASSWORD '{scram_verifier(master_pw)}'")
        c.execute(f"CREATE ROLE {app}_group NOLOGIN")
        c.execute(f"CREATE ROLE {app} LOGIN PASSWORD '{scram_verifier(app_pw)}' IN ROLE {app}_group")
    base = {"engine": "postgres", "host": "localhost", "port": cluster.port, "dbname": dbname}
    master_name = f"{prefix}/master"
    m = sm.create_secret(Name=master_name, SecretString=json.dumps({**base, "username": "enkf_master", "password": master_pw}))
    secret_id = f"{prefix}/app"
    sm.create_secret(
        Name=secret_id,
        SecretString=json.dumps({**base, "username": app, "password": app_pw, "masterarn": m["ARN"]}),
    )
    return {"secret_id": secret_id, "master_id": master_name, "app": app, "master_pw": master_pw}


def rotation_config(pki: Pki, moto: Moto, secret_id: str, user: str, **rotation) -> dict:
    """`user`: rotation.user, the configured login whose clone takes turns with it."""
    return {
        "database": {"tls": "verify-full", "ca_file": str(pki.path("ca1.crt"))},
        "secrets": {"source": "aws", "secret_id": secret_id, "region": REGION, "endpoint_url": moto.url},
        "rotation": {"previous_grace": "0s", "user": user, **rotation},
        "scheduler": {"enabled": False},
        "http": {"listen": ""},
    }
