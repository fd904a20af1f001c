"""The prompt-aware synth: tempo, key, mood and style read from the prompt text, checked by
parsing and by the project's own analysis (functions.analysis) of the rendered audio."""

from __future__ import annotations

import pytest

from engines.base import GenerationJob
from engines.prompt_hints import STYLES, PromptHints, read_prompt
from engines.stems import build_prompt
from engines.synth import DEFAULT_BPM, DEFAULT_KEY, SynthEngine, plan_song
from engines.synth_stems import VOICES
from engines.theory import parse_key
from functions.analysis import analyze

SR = 32_000
# Long enough for the analysis to lock on at every tempo here; short enough to stay cheap.
CLIP_S = 10.0


@pytest.mark.parametrize(
    ("prompt", "bpm"),
    [
        ("ambient pads, 70 bpm", 70.0),
        ("dark techno, 128 BPM", 128.0),
        ("something at 90bpm", 90.0),
        ("a 92.5-bpm groove", 92.5),
        ("100 beats per minute", 100.0),
        ("tempo: 95, warm", 95.0),
        ("12 bpm drone", None),  # outside the tempi a song may ask for
        ("909 kicks", None),  # a number is not a tempo
        ("just vibes", None),
    ],
)
def test_tempo_is_read_from_the_prompt(prompt: str, bpm: float | None) -> None:
    assert read_prompt(prompt).bpm == bpm


@pytest.mark.parametrize(
    ("prompt", "key"),
    [
        ("pads in D minor", "D minor"),
        ("F# major groove", "F# major"),
        ("Bb minor ballad", "A# minor"),
        ("E♭ major hymn", "D# major"),
        ("C♯ minor", "C# minor"),
        ("A min loop", "A minor"),
        ("riff in F#m", "F# minor"),
        ("f sharp minor", "F# minor"),
        ("B flat major", "A# major"),
        ("in a minor", "A minor"),
        ("key of Eb", "D# major"),
        ("sad song in D", "D minor"),  # no mode named: the mood decides
        ("a minor hit", None),  # the article, not the note
        ("the minor details", None),
        ("a major label release", None),
        ("some A minute", None),
        ("", None),
    ],
)
def test_key_is_read_from_the_prompt(prompt: str, key: str | None) -> None:
    assert read_prompt(prompt).key == key


@pytest.mark.parametrize(
    ("prompt", "style", "mode"),
    [
        ("dark techno", "techno", "minor"),
        ("happy house", "house", "major"),
        ("liquid drum & bass roller", "drum and bass", None),
        ("lo-fi hip-hop beat", "lofi", None),  # the first style named wins
        ("boom bap", "hip hop", None),
        ("uplifting trance", "trance", "major"),
        ("melancholic jazzy piano", "jazz", "minor"),
        ("rocket launch sounds", None, None),  # whole words only
        ("trapped in a box", None, None),
    ],
)
def test_style_and_mood_words(prompt: str, style: str | None, mode: str | None) -> None:
    hints = read_prompt(prompt)
    assert (hints.style, hints.mode) == (style, mode)


def test_the_style_table_is_consistent() -> None:
    words = [w for row in STYLES.values() for w in row.words]
    assert len(words) == len(set(words)), "a phrase names two styles"
    for name, row in STYLES.items():
        assert read_prompt(name).style == name
        assert parse_key(row.key).name == row.key
        assert row.arrangement and set(row.arrangement) <= set(VOICES)
        assert all(level > 0 for level in row.arrangement.values())


def test_request_fields_win_over_the_prompt_and_the_prompt_over_the_style() -> None:
    job = GenerationJob(prompt="dark techno, 100 bpm, in C major", duration_s=1.0, seed=1)
    plan = plan_song(job)
    assert (plan.bpm, plan.key, plan.style) == (100.0, "C major", "techno")
    assert (plan.bpm_source, plan.key_source, plan.style_source) == ("prompt", "prompt", "prompt")

    explicit = plan_song(GenerationJob(prompt=job.prompt, duration_s=1.0, seed=1, bpm=90.0,
                                       key="E minor", style="ambient"))
    assert (explicit.bpm, explicit.key, explicit.style) == (90.0, "E minor", "ambient")
    assert explicit.arrangement == STYLES["ambient"].arrangement
    assert (explicit.bpm_source, explicit.key_source) == ("request", "request")
    assert explicit.style_source == "request"
    assert explicit.hints == PromptHints(bpm=100.0, key="C major", mode="minor", style="techno")

    chords = plan_song(GenerationJob(prompt=job.prompt, duration_s=1.0, seed=1,
                                     chords=("Am", "F", "C", "G")))
    assert (chords.key, chords.chords, chords.key_source) == (
        "A minor", ("Am", "F", "C", "G"), "request")

    styled = plan_song(GenerationJob(prompt="dark techno", duration_s=1.0, seed=1))
    assert (styled.bpm, styled.key) == (STYLES["techno"].bpm, STYLES["techno"].key)
    assert (styled.bpm_source, styled.key_source) == ("style", "style")

    plain = plan_song(GenerationJob(prompt="x", duration_s=1.0, seed=1))
    assert (plain.bpm, plain.key, plain.style) == (DEFAULT_BPM, DEFAULT_KEY, None)
    assert plain.metadata()["bpm_source"] == "default"


def test_an_unknown_request_style_leaves_the_style_to_the_prompt() -> None:
    prompt = build_prompt("reggae feel", stem="drums", style="indie")
    plan = plan_song(GenerationJob(prompt=prompt, duration_s=1.0, seed=1, style="indie",
                                   stem="drums"))
    assert (plan.style, plan.style_source, plan.bpm) == ("reggae", "prompt", 76.0)


# (prompt, the tempo and key it asks for): explicit tempo/key text, style words only, moods,
# sharps and flats, major and minor, 3/4.
ASKED = [
    ("dark techno, 128 bpm", 128.0, "A minor"),
    ("ambient pads, 70 bpm", 70.0, "D major"),
    ("lofi hip hop at 85bpm in F# minor", 85.0, "F# minor"),
    ("jazz trio in Bb major, 112 BPM", 112.0, "A# major"),
    ("happy house", 124.0, "F major"),
    ("drum and bass", 174.0, "F minor"),
    ("uplifting trance anthem in E♭ major", 138.0, "D# major"),
    ("sad piano ballad, 66 bpm, C# minor", 66.0, "C# minor"),
    ("reggae groove in A min", 76.0, "A minor"),
    ("trap beat in D minor", 140.0, "D minor"),
    ("rock anthem in the key of E", 120.0, "E major"),
    ("waltz in D major", 96.0, "D major"),
    ("boom bap, 92 beats per minute, in Ab minor", 92.0, "G# minor"),
    ("punk in G major", 170.0, "G major"),
]


@pytest.mark.parametrize(("prompt", "bpm", "key"), ASKED, ids=[p for p, _, _ in ASKED])
def test_analysis_measures_the_tempo_and_key_the_prompt_asks_for(
    prompt: str, bpm: float, key: str
) -> None:
    job = GenerationJob(prompt=prompt, duration_s=CLIP_S, seed=5)
    result = analyze(SynthEngine().render(job), SR)
    assert result.tempo is not None and result.key is not None
    assert result.tempo.bpm == pytest.approx(bpm, rel=0.04)
    assert result.key.label == key


def test_explicit_fields_are_what_the_analysis_hears() -> None:
    job = GenerationJob(prompt="dark techno, 128 bpm, in A minor", duration_s=CLIP_S, seed=2,
                        bpm=100.0, key="C# major")
    result = analyze(SynthEngine().render(job), SR)
    assert result.tempo is not None and result.key is not None
    assert result.tempo.bpm == pytest.approx(100.0, rel=0.04)
    assert result.key.label == "C# major"
