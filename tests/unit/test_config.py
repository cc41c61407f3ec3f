"""Config: every key of the example parses; every mistake is one error naming its key path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from jml import config
from jml.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_parses_every_key() -> None:
    cfg = config.from_dict(yaml.safe_load((ROOT / "config/jml.example.yaml").read_text()), ROOT / "config")
    assert set(cfg.connectors) == {"demo", "aws", "github", "slack"}
    assert cfg.lifecycle.delete_after == dt.timedelta(days=30)
    assert cfg.sources.hris is not None and cfg.sources.hris.poll_interval == dt.timedelta(minutes=5)


def test_demo_config_parses() -> None:
    cfg = config.from_dict(yaml.safe_load((ROOT / "config/demo/jml.yaml").read_text()), ROOT / "config/demo")
    assert cfg.connectors["demo"].type == "scim"


@pytest.mark.parametrize(
    ("doc", "path", "words"),
    [
        ({"stat": {}}, "stat", "unknown key"),
        ({"guard": {"max_deprovision_count": "many"}}, "guard.max_deprovision_count", "integer"),
        ({"lifecycle": {"delete_after": "soon"}}, "lifecycle.delete_after", "not a duration"),
        ({"lifecycle": {"termination_time": "25:99"}}, "lifecycle.termination_time", "not a time"),
        ({"sources": {"hris": {"location": "x", "timezone": "Mars/Base"}}}, "sources.hris.timezone", "time zone"),
        ({"connectors": {"a": {"type": "scim"}}}, "connectors.a.url", "missing"),
        ({"connectors": {"a": {"type": "ldap", "url": "x"}}}, "connectors.a", "unknown connector type"),
        ({"connectors": {"a": {"type": "scim", "url": "x", "token": "secret"}}}, "connectors.a.token", "unknown key"),
        ({"policy": {"rules": [{"name": "r", "grant": {"nowhere": ["g"]}}]}}, "policy.rules.0.grant.nowhere",
         "unknown connector"),
        ({"connectors": {"gh": {"type": "github", "mode": "org"}}}, "connectors.gh.org", "needs"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_mistakes_name_their_key_path(doc: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.from_dict(doc)
    assert err.value.path == path
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_secret_names_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    cfg = config.from_dict({"connectors": {"a": {"type": "scim", "url": "x", "token_env": "NOPE_TOKEN"}}})
    with pytest.raises(ConfigError) as err:
        config.resolve_secret(cfg.connectors["a"], "token", "connectors.a")
    assert err.value.path == "connectors.a.token_env"
    assert "NOPE_TOKEN" in str(err.value)


def test_secret_file_is_reread_after_rotation(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("first-secret\n")
    cfg = config.from_dict({"connectors": {"a": {"type": "scim", "url": "x", "token_file": str(f)}}})
    assert config.resolve_secret(cfg.connectors["a"], "token", "connectors.a") == "first-secret"
    f.write_text("second-secret\n")
    import os

    os.utime(f, (1, 1))  # a different mtime, as a rotation would leave
    assert config.resolve_secret(cfg.connectors["a"], "token", "connectors.a") == "second-secret"


def test_relative_sqlite_path_is_next_to_the_config(tmp_path: Path) -> None:
    cfg = config.from_dict({"state": {"url": "sqlite:///state/jml.db"}}, tmp_path)
    assert cfg.state.url == f"sqlite:///{tmp_path.resolve()}/state/jml.db"


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600), ("30d", 2592000),
                                                (15, 15), ("250ms", 0.25)])
def test_durations(text: object, seconds: float) -> None:
    assert config.parse_duration(text).total_seconds() == seconds


def test_every_unknown_key_is_reported_with_the_nearest_known_one() -> None:
    """Issue 17: not just the first unknown key, and a "did you mean" for each typo."""
    doc = {"server": {"listn": "127.0.0.1:1", "admn_token_env": "X"}, "lifecycle": {"prehire_day": 3},
           "connectors": {"demo": {"type": "scim", "url": "http://x/", "tokn_env": "T"}}, "zzz": 1}
    with pytest.raises(ConfigError) as e:
        config.from_dict(doc)
    text = str(e.value)
    assert text.startswith("5 unknown keys")
    for want in ("server.listn: unknown key (did you mean server.listen?)",
                 "server.admn_token_env: unknown key (did you mean server.admin_token_env?)",
                 "lifecycle.prehire_day: unknown key (did you mean lifecycle.prehire_days?)",
                 "connectors.demo.tokn_env: unknown key (did you mean connectors.demo.token_env?)",
                 "zzz: unknown key"):
        assert want in text, text


def test_display_timezone_defaults_to_hrs() -> None:
    hr = {"location": "x", "timezone": "Europe/Berlin"}
    assert str(config.from_dict({"sources": {"hris": hr}}).display_timezone) == "Europe/Berlin"
    cfg = config.from_dict({"sources": {"hris": hr}, "server": {"timezone": "America/New_York"}})
    assert str(cfg.display_timezone) == "America/New_York"
    with pytest.raises(ConfigError, match=r"server\.timezone"):
        config.from_dict({"server": {"timezone": "Mars/Base"}})


def test_access_section() -> None:
    cfg = config.from_dict({
        "connectors": {"app": {"type": "scim", "url": "x"}},
        "access": {"default_duration": "30d",
                   "catalogue": {"app": {"group:Prod Admins": {"owner": "bob@example.com", "risk": "high",
                                                               "max_duration": "7d"},
                                         "group:Engineering": {"risk": "low", "managed": True}}},
                   "jit": {"max_duration": "8h", "roles": ["operator"]}}})
    entry = cfg.access.catalogue["app"]["group:Prod Admins"]
    assert (entry.owner, entry.risk, entry.max_duration, entry.requestable, entry.managed) == \
        ("bob@example.com", "high", dt.timedelta(days=7), True, None)
    assert cfg.access.jit.roles == ["operator"] and cfg.access.jit.max_duration == dt.timedelta(hours=8)
    assert config.from_dict({}).access.default_duration == dt.timedelta(days=30)


def test_access_check_interval() -> None:
    """How often the daemon's expiry job runs: a minute unless told; never 0."""
    assert config.from_dict({}).access.check_interval == dt.timedelta(seconds=60)
    assert config.from_dict({"access": {"check_interval": "5s"}}).access.check_interval == dt.timedelta(seconds=5)
    with pytest.raises(ConfigError) as err:
        config.from_dict({"access": {"check_interval": "0s"}})
    assert err.value.path == "access.check_interval" and "longer than" in str(err.value)


@pytest.mark.parametrize(
    ("doc", "path", "words"),
    [
        ({"access": {"catalogue": {"nowhere": {}}}}, "access.catalogue.nowhere", "unknown connector"),
        ({"connectors": {"app": {"type": "scim", "url": "x"}},
          "access": {"catalogue": {"app": {"group:X": {"risk": "extreme"}}}}}, "access.catalogue.app.group:X.risk",
         "low"),
        ({"connectors": {"app": {"type": "scim", "url": "x"}},
          "access": {"catalogue": {"app": {"group:X": {"ownr": "a"}}}}}, "access.catalogue.app.group:X.ownr",
         "unknown key"),
        ({"access": {"jit": {"roles": ["boss"]}}}, "access.jit.roles", "unknown role"),
        ({"access": {"default_duration": "0s"}}, "access.default_duration", "longer than"),
        ({"access": {"expiry": "1d"}}, "access.expiry", "unknown key"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_access_mistakes_name_their_key_path(doc: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.from_dict(doc)
    assert err.value.path == path
    assert words in str(err.value)


def test_a_connectors_secret_is_reused_for_a_second_then_read_again(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Runtime.secret_getter: every request asks for its token; it is read (file stat, environment)
    at most once per SECRET_REUSE, so a rotation is picked up within that and not before."""
    import os

    from jml import runtime

    f = tmp_path / "tok"
    f.write_text("first-secret\n")
    cfg = config.from_dict({"state": {"url": f"sqlite:///{tmp_path / 'jml.db'}"},
                            "connectors": {"a": {"type": "scim", "url": "x", "token_file": str(f)}}})
    get = runtime.Runtime(cfg).secret_getter(cfg.connectors["a"], "connectors.a")
    clock = [100.0]
    monkeypatch.setattr(runtime.time, "monotonic", lambda: clock[0])  # (the module's clock, for this test)
    assert get("token") == "first-secret"
    f.write_text("second-secret\n")
    os.utime(f, (1, 1))  # a different mtime, as a rotation would leave
    clock[0] += runtime.SECRET_REUSE / 2
    assert get("token") == "first-secret"  # within the reuse: not read again
    clock[0] += runtime.SECRET_REUSE
    assert get("token") == "second-secret"
    f.unlink()
    clock[0] += runtime.SECRET_REUSE
    with pytest.raises(ConfigError):  # a failed read is not kept: raised each time it is asked
        get("token")
    with pytest.raises(ConfigError):
        get("token")
