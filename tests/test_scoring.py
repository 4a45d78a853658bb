"""The SpaceNet building F1 scorer: exact published scores, and the matching rules on small cases."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from footprints.cli import main
from footprints.geo.scoring import read_polygon_table, score


@pytest.fixture(scope="module")
def sn2(shared_data: Path) -> Path:
    return shared_data / "spacenet" / "sn2_scoring"


def test_reproduces_published_spacenet2_scores_exactly(sn2: Path) -> None:
    report = score(
        read_polygon_table(sn2 / "SN2_sample_truth.csv"), read_polygon_table(sn2 / "SN2_sample_preds.csv")
    )
    published_full = pd.read_csv(sn2 / "SN2_test_results_full.csv").set_index("imageID")
    ours = report.per_image.set_index("image_id")
    assert sorted(ours.index) == sorted(published_full.index)
    for image_id, want in published_full.iterrows():
        got = ours.loc[image_id]
        assert (got.tp, got.fp, got.fn, got.aoi) == (want.TruePos, want.FalsePos, want.FalseNeg, want.AOI)
        # Exact float equality: the same sums give the same IEEE results.
        assert (got.precision, got.recall, got.f1) == (want.Precision, want.Recall, want.F1Score), image_id

    published = pd.read_csv(sn2 / "SN2_test_results.csv")
    # The published summary lists the AOIs in sorted order, without their names.
    assert list(report.per_aoi.index) == ["AOI_2_Vegas", "AOI_5_Khartoum"]
    for (_, got), (_, want) in zip(report.per_aoi.iterrows(), published.iterrows(), strict=True):
        assert (got.tp, got.fp, got.fn) == (want.TruePos, want.FalsePos, want.FalseNeg)
        assert (got.precision, got.recall, got.f1) == (want.Precision, want.Recall, want.F1Score)


def test_cli_prints_per_aoi_and_overall_json(sn2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "score",
        "--truth",
        str(sn2 / "SN2_sample_truth.csv"),
        "--proposals",
        str(sn2 / "SN2_sample_preds.csv"),
    ]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["aois"]["AOI_2_Vegas"]["f1"] == 0.8860759493670887
    assert result["aois"]["AOI_5_Khartoum"]["f1"] == 0.4444444444444444
    assert (result["overall"]["tp"], result["overall"]["fp"], result["overall"]["fn"]) == (87, 57, 82)
    assert len(result["images"]) == 6
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "AOI_2_Vegas" in table
    assert "overall" in table


def frame(rows: list[tuple[str, shapely.Geometry, float]]) -> gpd.GeoDataFrame:
    ids, geoms, conf = zip(*rows, strict=True) if rows else ((), (), ())
    return gpd.GeoDataFrame({"image_id": list(ids), "confidence": list(conf)}, geometry=list(geoms))


def test_each_truth_polygon_is_found_once() -> None:
    truth = frame([("AOI_1_X_img1", shapely.box(0, 0, 10, 10), 1.0)])
    proposals = frame(
        [("AOI_1_X_img1", shapely.box(0, 0, 10, 10), 0.9), ("AOI_1_X_img1", shapely.box(0, 0, 10, 9), 0.8)]
    )
    assert score(truth, proposals).overall == {
        "tp": 1,
        "fp": 1,
        "fn": 0,
        "precision": 0.5,
        "recall": 1.0,
        "f1": 2 / 3,
    }


def test_the_surer_proposal_claims_the_building_first() -> None:
    truth = frame(
        [("AOI_1_X_img1", shapely.box(0, 0, 10, 10), 1.0), ("AOI_1_X_img1", shapely.box(10, 0, 20, 10), 1.0)]
    )
    # A poor but confident proposal (IoU 0.45 with the left building) takes it first, so the good
    # proposal of the left building no longer finds a free match.
    poor = shapely.box(0, 0, 4.5, 10)
    good = shapely.box(0, 0, 10, 10)
    assert score(truth, frame([("AOI_1_X_img1", poor, 0.9), ("AOI_1_X_img1", good, 0.1)])).overall["tp"] == 1
    merged = shapely.box(0, 0, 20, 10)  # IoU 0.5 with each building: a match at the threshold
    result = score(truth, frame([("AOI_1_X_img1", merged, 0.9), ("AOI_1_X_img1", good, 0.1)])).overall
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 1)


def test_small_polygons_are_ignored_on_both_sides_and_images_without_truth_count() -> None:
    truth = frame(
        [("AOI_1_X_img1", shapely.box(0, 0, 4, 4), 1.0), ("AOI_1_X_img1", shapely.box(20, 20, 40, 40), 1.0)]
    )
    proposals = frame(
        [
            ("AOI_1_X_img1", shapely.box(0, 0, 4, 4), 0.9),  # 16 px: too small to count
            ("AOI_1_X_img1", shapely.box(20, 20, 40, 40), 0.8),
            ("AOI_1_X_img2", shapely.box(0, 0, 30, 30), 0.7),  # an image with no truth at all
        ]
    )
    report = score(truth, proposals)
    per_image = report.per_image.set_index("image_id")
    assert per_image.loc["AOI_1_X_img1", ["tp", "fp", "fn"]].tolist() == [1, 0, 0]
    assert per_image.loc["AOI_1_X_img2", ["tp", "fp", "fn"]].tolist() == [0, 1, 0]
    assert report.per_aoi.loc["AOI_1_X", "f1"] == pytest.approx(2 / 3)
    # Which proposals matched, in the table's order, for calibrating scores.
    assert report.counted.tolist() == [False, True, True]
    assert report.matched.tolist() == [False, True, False]


def test_self_intersecting_proposal_is_repaired_not_lost() -> None:
    truth = frame([("AOI_1_X_img1", shapely.box(0, 0, 10, 10), 1.0)])
    # A ring with a spike that doubles back on itself: invalid, but it covers the building.
    spike = shapely.Polygon([(0, 0), (10, 0), (10, 10), (0, 10), (0, 5), (-3, 5), (0, 5), (0, 0)])
    assert not spike.is_valid
    assert score(truth, frame([("AOI_1_X_img1", spike, 1.0)])).overall["tp"] == 1


def test_min_area_counts_polygons_of_exactly_20_px_on_both_sides() -> None:
    """The documented rule: a polygon counts when its area is >= min_area, truth and proposals alike."""
    at = shapely.box(0, 0, 8, 2.5)  # exactly 20 px^2
    under = shapely.box(0, 0, 10, 1.999)  # 19.99 px^2
    over = shapely.box(0, 0, 10, 2.001)  # 20.01 px^2
    assert shapely.area(at) == 20.0
    assert shapely.area(under) == pytest.approx(19.99)
    assert shapely.area(over) == pytest.approx(20.01)
    # One polygon per image, so each image's counts say whether its polygon was counted.
    truth = frame(
        [
            ("AOI_1_X_truth20", at, 1.0),
            ("AOI_1_X_truth1999", under, 1.0),
            ("AOI_1_X_truth2001", over, 1.0),
            ("AOI_1_X_both20", at, 1.0),
        ]
    )
    proposals = frame(
        [
            ("AOI_1_X_prop20", at, 0.9),
            ("AOI_1_X_prop1999", under, 0.9),
            ("AOI_1_X_prop2001", over, 0.9),
            ("AOI_1_X_both20", at, 0.9),
        ]
    )
    counts = score(truth, proposals, min_area=20.0).per_image.set_index("image_id")[["tp", "fp", "fn"]]
    assert counts.to_dict("index") == {
        "AOI_1_X_truth20": {"tp": 0, "fp": 0, "fn": 1},  # counted: a building nobody found
        "AOI_1_X_truth1999": {"tp": 0, "fp": 0, "fn": 0},  # too small: ignored
        "AOI_1_X_truth2001": {"tp": 0, "fp": 0, "fn": 1},
        "AOI_1_X_prop20": {"tp": 0, "fp": 1, "fn": 0},  # counted: a false positive
        "AOI_1_X_prop1999": {"tp": 0, "fp": 0, "fn": 0},  # too small: ignored
        "AOI_1_X_prop2001": {"tp": 0, "fp": 1, "fn": 0},
        "AOI_1_X_both20": {"tp": 1, "fp": 0, "fn": 0},  # both counted, and they match
    }
