"""The shipped rules: the reference story matches all three, the decoys none."""

from __future__ import annotations

import io

import pytest

from monitor.engine import load_rules
from monitor.engine.tools import evaluate
from monitor.engine.tools import test as run_examples
from monitor.language import detect
from monitor.model import Article
from tests.engine.helpers import RULES_DIR, article, reference_article

DEFAULT_IDS = {"summit", "sanctions", "arms-control"}


@pytest.fixture(scope="module")
def ruleset():
    return load_rules([RULES_DIR])


def test_default_rules_and_topics(ruleset) -> None:
    assert {rule.id for rule in ruleset.rules} == DEFAULT_IDS
    assert ruleset.topics == {f"alerts.{rule_id}" for rule_id in DEFAULT_IDS}


def test_reference_article_matches_all_three(ruleset) -> None:
    assert {match.rule.id for match in ruleset.match(reference_article())} == DEFAULT_IDS


@pytest.mark.parametrize(
    "decoy",
    [
        "Two climbers reached the summit of Everest at dawn after a nine-hour push from the South Col.",
        "The league sanctioned the club for fielding an ineligible player and docked it six points.",
        "UEFA imposed sanctions on the club after its fans threw flares onto the pitch.",
        "The council sanctioned the plan for a new library on the high street.",
        "A new exhibition explores the coat of arms of the city, granted by the king in 1592.",
        "The new chief executive promised a new start for the struggling retailer.",
        "The company said the deal marked a New Start for its European business.",
    ],
)
def test_decoy_matches_no_rule(ruleset, decoy: str) -> None:
    assert ruleset.match(article(decoy, title=decoy.split(".")[0])) == []


def test_examples_in_default_rules_pass() -> None:
    out = io.StringIO()
    assert run_examples([RULES_DIR], out) == 0, out.getvalue()


def test_default_rules_reach_f1_on_the_labeled_set() -> None:
    out = io.StringIO()
    assert evaluate(RULES_DIR.parent / "tests" / "data" / "labeled.jsonl", [RULES_DIR], out) == 0
    rows = {line.split()[0]: float(line.split()[-1]) for line in out.getvalue().splitlines() if line.split()[0] in DEFAULT_IDS}
    assert rows.keys() == DEFAULT_IDS and min(rows.values()) >= 0.9, out.getvalue()


def test_summit_needs_the_leaders_near_the_meeting(ruleset) -> None:
    """An opinion piece naming Trump and Putin far apart, with "meet" near Trump only (the
    labeled negative neg-23, modelled on a real feed item the summit rule fired on), raises
    nothing; the same leaders with the meeting in one sentence do."""
    import json

    labeled = RULES_DIR.parent / "tests" / "data" / "labeled.jsonl"
    records = {json.loads(line)["id"]: json.loads(line) for line in labeled.read_text(encoding="utf-8").splitlines()}
    piece = records["neg-23"]
    assert piece["labels"] == []
    assert ruleset.match(article(piece["body"], title=piece["title"])) == []
    close = piece["body"] + " Trump will meet Putin in Alaska next month."
    assert [match.rule.id for match in ruleset.match(article(close, title=piece["title"]))] == ["summit"]


def test_the_seed_article_raises_one_alert_per_rule(ruleset) -> None:
    from tests.support import SHARED

    seed = SHARED / "seeds" / "000_2d2ab9e6ed23a7ee.txt"
    if not seed.exists():
        pytest.skip("../shared/seeds is not present")
    from monitor.parse.textinput import article_from_input

    matches = ruleset.match(article_from_input(seed.read_bytes(), str(seed)))
    assert sorted(match.rule.id for match in matches) == sorted(DEFAULT_IDS)


MULTILINGUAL = RULES_DIR.parent / "tests" / "data" / "multilingual" / "labeled-holdout.jsonl"
COVERED = ("fr", "de", "es", "it", "pt", "ru", "zh", "ja", "ar")


@pytest.mark.parametrize("name", ["labeled-holdout.jsonl", "labeled-dev.jsonl"])
def test_default_rules_reach_f1_per_rule_and_language_on_the_multilingual_sets(name: str) -> None:
    out = io.StringIO()
    assert evaluate(MULTILINGUAL.with_name(name), [RULES_DIR], out, by_lang=True) == 0
    rows = {}
    for line in out.getvalue().split("by language", 1)[1].splitlines()[2:]:
        rule_id, lang, *_rest, f1 = line.split()
        rows[(rule_id, lang)] = float(f1)
    cells = {(rule_id, lang) for rule_id in DEFAULT_IDS for lang in COVERED}
    assert cells <= rows.keys() and min(rows[cell] for cell in cells) >= 0.9, out.getvalue()


def test_the_english_held_out_figures_do_not_drop() -> None:
    """F1 on the English held-out set before the multilingual rules (2026-12-04)."""
    out = io.StringIO()
    assert evaluate(RULES_DIR.parent / "tests" / "data" / "labeled-holdout.jsonl", [RULES_DIR], out) == 0
    rows = {line.split()[0]: float(line.split()[-1]) for line in out.getvalue().splitlines() if line.split()[0] in DEFAULT_IDS}
    assert rows["summit"] >= 1.0 and rows["sanctions"] >= 0.949 and rows["arms-control"] >= 0.981, out.getvalue()


@pytest.mark.parametrize(
    ("lang", "text", "expected"),
    [
        # The traps of each language, as the English decoys above.
        ("fr", "Deux alpinistes ont atteint le sommet du Mont-Blanc mardi, accueillis par le président du club alpin.", set()),
        ("fr", "La Ligue a infligé une sanction de trois matchs au club de Lens après les incidents en tribune.", set()),
        ("fr", "Emmanuel Macron a reçu Friedrich Merz à l'Élysée pour un dîner de travail.", {"summit"}),
        ("de", "Die Seilschaft erreichte den Gipfel des Matterhorns am frühen Morgen.", set()),
        ("de", "Der Bundestag debattiert über ein schärferes Waffenrecht nach dem Amoklauf.", set()),
        ("de", "Die EU hat neue Sanktionen gegen Russland verhängt.", {"sanctions"}),
        ("es", "La cumbre del Aconcagua recibió a más montañeros que nunca esta temporada.", set()),
        ("es", "El debate sobre el control de armas en Estados Unidos se reaviva tras otro tiroteo escolar.", set()),
        ("es", "Washington y Moscú reanudan las negociaciones sobre el control de armamentos nucleares.", {"arms-control"}),
        ("it", "Il giudice sportivo ha inflitto una sanzione alla Lazio per cori razzisti dei tifosi.", set()),
        ("it", "Meloni e Macron si sono incontrati a Roma per un colloquio di due ore.", {"summit"}),
        ("pt", "A Summit Capital anunciou um novo fundo de investimento para startups em Lisboa.", set()),
        ("pt", "Os Estados Unidos impuseram novas sanções ao setor petrolífero da Venezuela.", {"sanctions"}),
        ("ru", "На саммите блогеров в Сочи обсудили продвижение в социальных сетях.", set()),
        ("ru", "Евросоюз утвердил новый пакет санкций против России.", {"sanctions"}),
        ("ru", "Москва и Вашингтон обсудили будущее ДСНВ.", {"arms-control"}),
        ("zh", "登山队昨天成功登顶珠峰峰顶，刷新了纪录。", set()),
        ("zh", "美国宣布对伊朗石油出口实施新一轮制裁。", {"sanctions"}),
        ("ja", "東京電力は柏崎刈羽原発の再稼働に向けた安全審査を受けた。", set()),
        ("ja", "日米首脳会談がワシントンで行われた。", {"summit"}),
        ("ar", "وصل المتسلقون إلى قمة جبل كليمنجارو صباح اليوم.", set()),
        ("ar", "فرضت الولايات المتحدة عقوبات جديدة على إيران.", {"sanctions"}),
    ],
)
def test_traps_and_plain_cases_in_other_languages(ruleset, lang: str, text: str, expected: set[str]) -> None:
    found = {match.rule.id for match in ruleset.match(Article(id="a", feed_url="t", body=text, lang=detect(text)))}
    assert found == expected, (lang, detect(text))
