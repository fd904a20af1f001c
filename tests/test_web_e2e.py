"""The web page end to end: headless Chromium (Debian's chromium + chromedriver) driving the
page served by a real ingress (synth engine, SeaweedFS, DuckDB owner) as a person would.

Screenshots go to test-artifacts/ (the desktop page after a generation, the phone-width page).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from storage.embedded_s3 import EmbeddedS3
from tests.support import make_settings
from tests.support.app import deployed_app
from tests.support.web_driver import (
    INKED,
    JOB,
    PLAYABLE,
    Browser,
    banner,
    facts,
    fill_form,
    ids,
    missing_browser,
    open_page,
    wait_completed,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]
API_KEY = "web-test-key"
AUTH = {"x-api-key": API_KEY}
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def site(serve_url: str, s3_server: EmbeddedS3,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """musicfn with the synth engine and an API key, its page at the returned URL."""
    settings = make_settings(s3_server, tmp_path_factory.mktemp("web"), api_key=API_KEY)
    with deployed_app(settings, "web", "/web-test", batch_wait_timeout_s=0.01) as url:
        yield f"{url}/"


@pytest.fixture(scope="module")
def api(site: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site, headers=AUTH, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    why = missing_browser()
    if why:
        pytest.fail(f"the web page tests need a real browser: {why}")
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def test_generate_listen_and_rerun(browser: Browser, site: str, api: httpx.Client,
                                   tmp_path: Path) -> None:
    b = browser
    open_page(b, site, key=None)
    fill_form(b, prompt="bright synth pop with piano chords", engine="synth",
              seed="4242", bpm="100", preset="podcast", duration="6")
    # No key yet: the API's own 401 message, and the key box opens.
    b.click("#generate")
    b.wait("return !document.querySelector('#error').hidden", what="the 401 banner")
    unauthorised = httpx.post(f"{site}v1/generations", json={"prompt": "x", "duration_s": 1})
    assert unauthorised.status_code == 401 and banner(b) == unauthorised.json()["message"]
    assert b.run("return document.querySelector('#key-box').open")
    assert ids(b, "#jobs li") == []
    b.type("#api-key", API_KEY)
    b.click("#key-form button[type=submit]")
    assert b.run("return sessionStorage.getItem('musicfn.apiKey')") == API_KEY
    b.console()  # the 401 above is logged as a failed load; nothing may fail from here on

    b.click("#generate")
    b.wait("return document.querySelectorAll('#jobs li').length === 1", what="the job")
    assert banner(b) == ""
    (first,) = ids(b, "#jobs li")
    wait_completed(b, first)
    sel = JOB.format(first)
    # The waveform is drawn from the peaks route; the player has a playable source.
    assert b.wait(INKED, f"{sel} canvas.wave", what="waveform pixels") > 1000
    assert b.wait(PLAYABLE, f"{sel} audio", what="playable audio") == pytest.approx(6.0,
                                                                                     abs=0.05)
    rec = api.get(f"v1/generations/{first}").json()["record"]
    assert rec["seed"] == 4242 and rec["request"]["output"]["preset"] == "podcast"
    shown = facts(b, sel)
    assert float(shown["BPM"]) == pytest.approx(rec["summary"]["bpm"], abs=0.051)
    assert float(shown["Loudness"].removesuffix(" LUFS")) == pytest.approx(-16, abs=0.5)
    assert (shown["Duration"], shown["Seed"], shown["Engine"]) == ("6.0 s", "4242", "synth")
    b.screenshot(ARTIFACTS / "web-generation.png")
    # Download saves the track's bytes under a name made from the prompt.
    b.allow_downloads(tmp_path)
    b.click(f"{sel} .download")
    saved = tmp_path / f"bright-synth-pop-with-piano-chords-{first}.wav"
    deadline = time.monotonic() + 30
    while not saved.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == rec["audio"]["sha256"]

    # "Again, same seed" gives the same audio; "Vary seed" another seed and other audio.
    b.click(f"{sel} .again")
    b.wait("return document.querySelectorAll('#jobs li').length === 2", what="the re-run")
    again = ids(b, "#jobs li")[0]
    wait_completed(b, again)
    b.click(f"{sel} .vary")
    b.wait("return document.querySelectorAll('#jobs li').length === 3", what="the variation")
    varied = ids(b, "#jobs li")[0]
    wait_completed(b, varied)
    recs = {i: api.get(f"v1/generations/{i}").json()["record"] for i in (again, varied)}
    assert recs[again]["seed"] == 4242
    assert recs[again]["audio"]["sha256"] == rec["audio"]["sha256"]
    assert recs[again]["request"]["output"]["preset"] == "podcast"
    assert recs[varied]["seed"] != 4242
    assert recs[varied]["audio"]["sha256"] != rec["audio"]["sha256"]
    errors = [e for e in b.console() if e["level"] == "SEVERE"]
    assert errors == [], errors


@pytest.mark.parametrize(("fields", "body"), [
    ({"key": "H major"}, {"key": "H major"}),
    ({"duration": "999"}, {"duration_s": 999}),
    ({"prompt": ""}, {"prompt": ""}),
    ({"model": "facebook/not-a-model"}, {"model": "facebook/not-a-model"}),
])
def test_bad_input_shows_the_api_message(browser: Browser, site: str, api: httpx.Client,
                                         fields: dict[str, str],
                                         body: dict[str, Any]) -> None:
    b = browser
    open_page(b, site, key=API_KEY)
    fill_form(b, **{"prompt": "dusty boom bap", "duration": "2", "engine": "synth", **fields})
    b.click("#generate")
    b.wait("return !document.querySelector('#error').hidden", what="the error banner")
    r = api.post("v1/generations",
                 json={"prompt": "dusty boom bap", "duration_s": 2, "engine": "synth", **body})
    assert r.status_code >= 400 and banner(b) == r.json()["message"]
    assert ids(b, "#jobs li") == []


def generate(api: httpx.Client, prompt: str, **body: Any) -> dict[str, Any]:
    r = api.post("v1/generations", params={"wait": 90},
                 json={"prompt": prompt, "duration_s": 2.0, "engine": "synth"} | body)
    assert r.status_code == 200, r.text
    rec: dict[str, Any] = r.json()["record"]
    return rec


def search(b: Browser, **fields: str) -> list[str]:
    """Set the catalogue filters, press Search, and return the rows shown."""
    for name, value in fields.items():
        if name in ("f-status", "f-key", "f-mode", "f-from", "f-to"):
            b.select(f"#{name}", value)  # selects, and dates (typing them is locale-bound)
        else:
            b.type(f"#{name}", value)
    b.run("document.querySelector('#catalogue').replaceChildren();"
          "document.querySelector('#cat-summary').textContent = '';")
    b.click("#f-apply")
    b.wait("return document.querySelector('#cat-summary').textContent", what="the results",
           diagnose=lambda: banner(b))
    assert banner(b) == ""
    return ids(b, "#catalogue li")


def test_model_field_offers_the_served_models(browser: Browser, site: str) -> None:
    b = browser
    open_page(b, site, key=API_KEY)
    names = b.wait("const o = [...document.querySelectorAll('#models option')]"
                   ".map((x) => x.value); return o.length === 1 && o", what="the served models")
    assert names == ["synth"]
    assert b.wait("return document.querySelector('#model').placeholder") == "default: synth"


def test_catalogue_filters_and_pages(browser: Browser, site: str, api: httpx.Client) -> None:
    token = uuid.uuid4().hex[:8]
    tracks = [generate(api, f"{token} groove {bpm}", bpm=bpm, seed=bpm, duration_s=5.0)
              for bpm in (80, 120, 150)]
    assert all(t["summary"]["bpm"] for t in tracks)
    newest_first = [t["id"] for t in reversed(tracks)]
    b = browser
    open_page(b, site, key=None, tab="catalogue")  # 401 first; the key then loads the list
    b.wait("return !document.querySelector('#error').hidden", what="the 401 banner")
    b.type("#api-key", API_KEY)
    b.click("#key-form button[type=submit]")
    b.wait("return document.querySelector('#cat-summary').textContent", what="the catalogue")
    assert set(newest_first) <= set(ids(b, "#catalogue li"))

    assert search(b, **{"f-prompt": token.upper()}) == newest_first
    # BPM range: only the 120 BPM track (the synth's tempo is recovered within 1 BPM).
    assert search(b, **{"f-bpm-min": "100", "f-bpm-max": "140"}) == [tracks[1]["id"]]
    b.type("#f-bpm-min", "")
    b.type("#f-bpm-max", "")
    key, mode = tracks[0]["summary"]["key"], tracks[0]["summary"]["mode"]
    same = {t["id"] for t in tracks if (t["summary"]["key"], t["summary"]["mode"]) == (key, mode)}
    assert set(search(b, **{"f-key": key, "f-mode": mode})) == same
    b.select("#f-key", "")
    b.select("#f-mode", "")
    assert search(b, **{"f-status": "failed"}) == []
    b.select("#f-status", "")
    today = tracks[0]["created_at"][:10]
    assert search(b, **{"f-from": "2001-01-01", "f-to": "2001-12-31"}) == []
    assert search(b, **{"f-from": today, "f-to": today}) == newest_first

    # Two per page: the cursor leads to the oldest; "Newest" comes back.
    assert search(b, **{"f-limit": "2"}) == newest_first[:2]
    b.click("#cat-next")
    b.wait("return document.querySelector('#cat-summary').textContent.startsWith('Page 2')",
           what="page 2")
    assert ids(b, "#catalogue li") == newest_first[2:]
    assert b.run("return document.querySelector('#cat-next').disabled")
    b.click("#cat-first")
    b.wait("return document.querySelector('#cat-summary').textContent.startsWith('Page 1')",
           what="page 1")
    assert ids(b, "#catalogue li") == newest_first[:2]

    # A row opens into the track card with waveform and player.
    b.click(f"#catalogue li[data-id='{newest_first[0]}'] .open")
    assert b.wait(INKED, "#catalogue canvas.wave", what="waveform pixels") > 500
    assert b.wait(PLAYABLE, "#catalogue audio", what="playable audio") > 1.9


def sine_wav(path: Path, seconds: float = 2.0, rate: int = 44_100) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate,
             subtype="PCM_16")
    return path


def test_upload_analysis(browser: Browser, site: str, tmp_path: Path) -> None:
    b = browser
    open_page(b, site, key=API_KEY, tab="analyse")
    tone = sine_wav(tmp_path / "tone.wav")
    b.type("#upload-file", str(tone), clear=False)
    b.click("#upload-go")
    b.wait("return document.querySelector('#upload-result .facts')", what="the analysis")
    assert b.wait(INKED, "#upload-result canvas.wave", what="waveform pixels") > 500
    shown = facts(b, "#upload-result")
    direct = httpx.post(f"{site}v1/analyses", headers=AUTH,
                        files={"file": ("tone.wav", tone.read_bytes(), "audio/wav")}).json()
    assert shown["Key"] == direct["analysis"]["key"]["label"], shown
    assert shown["Duration"] == "2.0 s" and shown["Format"] == "1 ch · 44.1 kHz", shown
    assert shown["Peak"] == "-10.5 dBFS", shown  # 0.3 full scale
    assert b.wait(PLAYABLE, "#upload-result audio", what="the local file in the player") > 1.9

    # Stored: the normalised copy is a catalogue track with its own audio.
    b.click("#upload-store")
    b.click("#upload-go")
    b.wait("return document.querySelector('#upload-result .track[data-id]')",
           what="the stored track")
    assert b.wait(PLAYABLE, "#upload-result audio", what="the stored audio") > 1.9
    loudness = facts(b, "#upload-result")["Loudness"]
    assert float(loudness.removesuffix(" LUFS")) == pytest.approx(-16, abs=0.5)  # the default

    # Not audio: the API's message.
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"these are not audio samples" * 10)
    b.type("#upload-file", str(bad), clear=False)
    b.click("#upload-go")
    b.wait("return !document.querySelector('#error').hidden", what="the error banner")
    r = httpx.post(f"{site}v1/analyses", headers=AUTH,
                   files={"file": ("notes.wav", bad.read_bytes(), "audio/wav")})
    assert r.status_code == 400 and banner(b) == r.json()["message"]


def test_phone_width(browser: Browser, site: str, api: httpx.Client) -> None:
    rec = generate(api, "phone width ambient pad", bpm=70)
    b = browser
    b.set_window_size(390, 844)
    try:
        open_page(b, site, key=API_KEY, jobs=[rec["id"]])  # the tab's job list survives a reload
        wait_completed(b, rec["id"])
        assert b.wait(INKED, "#jobs canvas.wave", what="waveform pixels") > 500
        layout = b.run("""
            const vw = document.documentElement.clientWidth;
            const wide = [...document.querySelectorAll('body *')].filter(e => {
                const r = e.getBoundingClientRect();
                return r.width > 0 && (r.right > vw + 1 || r.left < -1);
            }).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className);
            return {vw, scroll: document.documentElement.scrollWidth, wide};""")
        assert layout["vw"] <= 390 and layout["scroll"] <= layout["vw"], layout
        assert layout["wide"] == [], layout
        b.screenshot(ARTIFACTS / "web-phone.png")
    finally:
        b.set_window_size(1280, 900)
