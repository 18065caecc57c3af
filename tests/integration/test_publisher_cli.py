"""The publisher command line, run as real processes against a real repository."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmupdate.publisher.repository import Repository
from tests.conftest import make_artifact, need_tool, run_cli, tree_state


def _init(tmp_path: Path, *extra: str) -> Path:
    d = tmp_path / "repo"
    run_cli("repo", "init", d, *extra, check=True)
    run_cli("app", "add", d, "web", check=True)
    return d


def test_round_trip(tmp_path: Path) -> None:
    d = _init(tmp_path, "--root-keys", "3", "--root-threshold", "2")
    keys = sorted(p.name for p in (d / "keys").glob("*.pem"))
    assert len([k for k in keys if k.startswith("root")]) == 3
    for p in (d / "keys").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    art = make_artifact(tmp_path / "app.bin", 5_000_000)
    out = run_cli(
        "release",
        "add",
        d,
        art,
        "--app",
        "web",
        "--version",
        "1.0",
        "--channel",
        "beta",
        "--json",
        check=True,
    )
    rel = json.loads(out.stdout)
    assert rel["target"] == "web/1.0/app.bin"
    assert rel["manifest"] == "web/1.0/app.bin.manifest.json"
    assert rel["length"] == 5_000_000
    assert rel["new_chunks"] == rel["chunks"] > 1
    listed = json.loads(run_cli("release", "list", d, "--json", check=True).stdout)
    assert [(r["app"], r["version"], r["channel"]) for r in listed] == [("web", "1.0", "beta")]
    verify = run_cli("repo", "verify", d, "--json", check=True)
    report = json.loads(verify.stdout)
    assert report["ok"] and report["chunks"] == rel["chunks"] and report["chunk_bytes"] == 5_000_000

    # the signed artifact target carries the design's custom field
    repo = Repository(d)
    tf = repo.apps["web"].signed.targets["web/1.0/app.bin"]
    assert tf.custom == {
        "swarmupdate": {"version": "1.0", "channel": "beta", "manifest": "web/1.0/app.bin.manifest.json"}
    }
    assert list(tf.hashes) == ["sha256"]
    assert repo.root.signed.consistent_snapshot
    assert repo.root.signed.roles["root"].threshold == 2
    # the delegation covers exactly the app's paths
    role = repo.targets.signed.delegations.roles["web"]  # type: ignore[union-attr]
    assert role.paths == ["web/*/*"] and role.terminating


def test_second_release_reuses_chunks(tmp_path: Path) -> None:
    d = _init(tmp_path)
    art = make_artifact(tmp_path / "app.bin", 8_000_000)
    run_cli("release", "add", d, art, "--app", "web", "--version", "1.0", check=True)
    data = bytearray(art.read_bytes())
    data[4_000_000:4_000_100] = b"z" * 100
    art.write_bytes(bytes(data))
    out = json.loads(
        run_cli("release", "add", d, art, "--app", "web", "--version", "1.1", "--json", check=True).stdout
    )
    # a 100-byte edit touches at most the chunk it falls in and its neighbour
    assert out["new_chunks"] <= 2 and out["new_chunk_bytes"] <= 2 * 4 * 1024 * 1024, out
    assert out["chunks"] - out["new_chunks"] >= out["chunks"] - 2


def test_refusals_change_nothing(tmp_path: Path) -> None:
    d = _init(tmp_path)
    art = make_artifact(tmp_path / "app.bin", 1_000_000)
    run_cli("release", "add", d, art, "--app", "web", "--version", "1.0", check=True)
    before = tree_state(d)
    cases = [
        (("release", "add", d, art, "--app", "web", "--version", "1.0"), 3, "already published"),
        (("release", "add", d, art, "--app", "nope", "--version", "2.0"), 3, "unknown app 'nope'"),
        (
            ("release", "add", d, tmp_path / "missing.bin", "--app", "web", "--version", "2.0"),
            2,
            "missing.bin",
        ),
        (("release", "add", d, art, "--app", "web", "--version", "../x"), 2, "--version"),
        (("release", "add", tmp_path / "nowhere", art, "--app", "web", "--version", "2.0"), 2, "repo.json"),
        (("app", "add", d, "web"), 3, "already exists"),
        (("app", "add", d, "Bad/Name"), 2, "app name"),
        (("app", "add", d, "root"), 2, "app name"),
        (("repo", "init", d), 2, "already holds"),
        (("repo", "init", tmp_path / "x", "--root-keys", "2", "--root-threshold", "3"), 2, "threshold"),
        (("key", "rotate", d, "--role", "nope"), 3, "unknown app"),
    ]
    for args, code, fragment in cases:
        proc = run_cli(*args)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        assert fragment in proc.stderr, (args, proc.stderr)
        assert tree_state(d) == before, args


def test_wrong_key_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    d = _init(tmp_path)
    art = make_artifact(tmp_path / "app.bin", 1_000_000)
    # replace the app's private key with an unrelated one
    app_key = next((d / "keys").glob("app-web-*.pem"))
    other = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    app_key.write_bytes(other)
    before = tree_state(d / "origin")
    proc = run_cli("release", "add", d, art, "--app", "web", "--version", "1.0")
    assert proc.returncode == 3, proc.stderr
    assert "role 'web'" in proc.stderr
    meta_before = {k: v for k, v in before.items() if k.startswith("metadata/")}
    assert {k: v for k, v in tree_state(d / "origin").items() if k.startswith("metadata/")} == meta_before
    assert run_cli("release", "list", d).stdout.strip() == "no releases"


def test_missing_key_names_role(tmp_path: Path) -> None:
    d = _init(tmp_path)
    next((d / "keys").glob("snapshot-*.pem")).unlink()
    art = make_artifact(tmp_path / "app.bin", 100_000)
    before = tree_state(d / "origin")
    proc = run_cli("release", "add", d, art, "--app", "web", "--version", "1.0")
    assert proc.returncode == 3
    assert "role 'snapshot'" in proc.stderr
    assert tree_state(d / "origin") == before


def test_damaged_metadata_is_named(tmp_path: Path) -> None:
    d = _init(tmp_path)
    art = make_artifact(tmp_path / "app.bin", 100_000)
    target = d / "origin/metadata/1.web.json"
    target.write_bytes(target.read_bytes().replace(b'"version": 1', b'"version": 7'))
    before = tree_state(d)
    proc = run_cli("release", "add", d, art, "--app", "web", "--version", "1.0")
    assert proc.returncode == 4, proc.stderr
    assert "1.web.json" in proc.stderr and "signatures" in proc.stderr
    assert tree_state(d) == before
    target.write_bytes(b"{not json")
    proc = run_cli("repo", "verify", d)
    assert proc.returncode == 4 and "1.web.json: damaged metadata" in proc.stderr


def test_expired_targets_is_refused(tmp_path: Path) -> None:
    faketime = need_tool("faketime")
    d = _init(tmp_path, "--expiry", "targets=2")
    art = make_artifact(tmp_path / "app.bin", 100_000)
    before = tree_state(d)
    proc = run_cli(
        "release", "add", d, art, "--app", "web", "--version", "1.0", prefix=[faketime, "-f", "+3d"]
    )
    assert proc.returncode == 3, proc.stderr
    assert "targets.json: expired" in proc.stderr and "repo refresh" in proc.stderr
    assert tree_state(d) == before
    # the operator's fix works (targets key is online in this test) and then publishing does
    run_cli("repo", "refresh", d, "--role", "targets", prefix=[faketime, "-f", "+3d"], check=True)
    run_cli(
        "release",
        "add",
        d,
        art,
        "--app",
        "web",
        "--version",
        "1.0",
        prefix=[faketime, "-f", "+3d"],
        check=True,
    )


def test_verify_finds_tampered_chunk_and_missing_chunk(tmp_path: Path) -> None:
    d = _init(tmp_path)
    art = make_artifact(tmp_path / "app.bin", 3_000_000)
    run_cli("release", "add", d, art, "--app", "web", "--version", "1.0", check=True)
    chunks = sorted((d / "origin/chunks").rglob("*"))
    chunks = [c for c in chunks if c.is_file()]
    data = bytearray(chunks[0].read_bytes())
    data[10] ^= 0xFF
    chunks[0].write_bytes(bytes(data))
    chunks[1].unlink()
    proc = run_cli("repo", "verify", d, "--json")
    assert proc.returncode == 4
    problems = json.loads(proc.stdout)["problems"]
    assert any(chunks[0].name in p and "does not match" in p for p in problems), problems
    assert any(chunks[1].name in p for p in problems), problems


def test_refresh_resigns_timestamp_and_snapshot_when_due(tmp_path: Path) -> None:
    d = _init(tmp_path)
    ts = Repository(d).timestamp.signed.version
    snap = Repository(d).snapshot.signed.version
    out = json.loads(run_cli("repo", "refresh", d, "--json", check=True).stdout)
    assert out["resigned"] == ["timestamp"]
    r = Repository(d)
    assert r.timestamp.signed.version == ts + 1 and r.snapshot.signed.version == snap
    faketime = need_tool("faketime")
    out = json.loads(
        run_cli("repo", "refresh", d, "--json", prefix=[faketime, "-f", "+5d"], check=True).stdout
    )
    assert out["resigned"] == ["snapshot", "timestamp"]
    assert Repository(d).snapshot.signed.version == snap + 1


def test_app_key_given_by_signer_uri(tmp_path: Path) -> None:
    """A team's key held outside the repository, named by a securesystemslib URI."""
    d = tmp_path / "repo"
    run_cli("repo", "init", d, check=True)
    team = tmp_path / "team"
    team.mkdir()
    priv = Ed25519PrivateKey.generate()
    (team / "key.pem").write_bytes(
        priv.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (team / "key.pub").write_bytes(
        priv.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    run_cli(
        "app",
        "add",
        d,
        "db",
        "--public-key",
        team / "key.pub",
        "--signer-uri",
        f"file2:{team / 'key.pem'}",
        check=True,
    )
    assert not list((d / "keys").glob("app-db*"))
    art = make_artifact(tmp_path / "db.bin", 200_000)
    run_cli("release", "add", d, art, "--app", "db", "--version", "1", check=True)
    (team / "key.pem").unlink()  # the team takes its key away: publishing stops, clearly
    proc = run_cli("release", "add", d, art, "--app", "db", "--version", "2")
    assert proc.returncode == 3 and "role 'db'" in proc.stderr


@pytest.mark.parametrize("role", ["root", "targets", "snapshot", "timestamp", "web"])
def test_key_rotate_every_role(tmp_path: Path, role: str) -> None:
    d = _init(tmp_path)
    before = Repository(d)
    old_keys = set(before.role_keys(role)[0][i].keyid for i in range(1))
    out = json.loads(run_cli("key", "rotate", d, "--role", role, "--json", check=True).stdout)
    after = Repository(d)
    new_keys = {k.keyid for k in after.role_keys(role)[0]}
    assert not (old_keys & new_keys)
    assert {p["new"] for p in out["rotated"]} == new_keys
    expected_root = before.root.signed.version + (
        1 if role in ("root", "targets", "snapshot", "timestamp") else 0
    )
    assert after.root.signed.version == expected_root
    assert json.loads(run_cli("repo", "verify", d, "--json", check=True).stdout)["ok"]
    # the old private key is retired, not left among the live ones
    assert any((d / "keys/retired").iterdir())


def test_tls_ca_and_issue(tmp_path: Path) -> None:
    """``tls ca`` makes a fleet CA once; ``tls issue`` makes certificates that verify against it."""
    ca = tmp_path / "ca"
    out = json.loads(run_cli("tls", "ca", ca, "--json", check=True).stdout)
    assert out["ca"] == str(ca / "ca.pem")
    assert stat.S_IMODE((ca / "ca.key").stat().st_mode) == 0o600
    before = tree_state(ca)
    again = run_cli("tls", "ca", ca)
    assert again.returncode == 2
    assert f"{ca / 'ca.pem'}: exists already" in again.stderr
    assert tree_state(ca) == before
    out = json.loads(
        run_cli(
            "tls", "issue", "node-7", "--ca", ca, "--out", tmp_path / "c", "--ip", "10.0.0.7", "--json"
        ).stdout
    )
    assert out["cert"] == str(tmp_path / "c" / "node-7.pem")
    assert stat.S_IMODE((tmp_path / "c" / "node-7.key").stat().st_mode) == 0o600
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "c" / "node-7.pem").read_bytes())
    ca_cert = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    bad = run_cli("tls", "issue", "n", "--ca", ca, "--ip", "10.0.0.999", "--out", tmp_path / "c")
    assert bad.returncode == 2
    assert "--ip '10.0.0.999': not an IP address" in bad.stderr
    missing = run_cli("tls", "issue", "n", "--ca", tmp_path / "nope", "--out", tmp_path / "c")
    assert missing.returncode == 2
    assert f"{tmp_path / 'nope' / 'ca.pem'}: cannot read the fleet CA" in missing.stderr
    assert not (tmp_path / "c" / "n.pem").exists()
