"""LAVA's fixtures through this dispatcher: they validate, build, and their action names match LAVA's.

Two sources (tests/lava_fixtures.py says how they are compared):

- the project's own jobs and dictionaries in LAVA's forms (tests/lava_compat/),
  rendered over the device-type templates of Debian's lava-server package
  (fetched at test time, tests/lava_reference.py), always;
- LAVA's own fixtures, when ``$LAVA_DISPATCH_LAVA_TREE`` names a LAVA source
  tree (a checkout at 2026.07): neither Debian's packages nor PyPI carry
  them, so a machine without that tree skips this part, saying why.

Each prints its table (job, device, accepted?, name match, named timeouts).
"""

from __future__ import annotations

import pytest
from lava_fixtures import CASES, OWN_CASES, lava_tree_source, own_source, run_all, table, tree_from_env
from lava_reference import LavaTemplates, lava_templates  # noqa: F401 - the fixture

# LAVA's in-scope fixtures this dispatcher refuses, each for a stated reason (README, LAVA compatibility).
REFUSED = {
    "kvm-context.yaml",  # a duplicated key in a test block (refused: LAVA would keep the last value)
    "x15-nfs.yaml",  # tests in a docker container
}
NAME_MATCH_FLOOR = 0.80  # the median share of LAVA's action names found in ours must not fall below it


def test_the_projects_lava_form_jobs_build_with_lavas_names_and_timeouts(lava_templates: LavaTemplates) -> None:
    outcomes = run_all(own_source(lava_templates.directory), OWN_CASES)
    print(f"\nthe project's LAVA-form jobs over lava-server {lava_templates.version}'s templates\n" + table(outcomes))
    assert len(outcomes) == len(OWN_CASES)
    for outcome in outcomes:
        assert outcome.accepted, (outcome.case, outcome.problems)
        assert outcome.timeouts_equal == outcome.timeouts_named, outcome.mismatches
        assert outcome.share is not None and outcome.share >= NAME_MATCH_FLOOR, outcome.mismatches
    # qemu: LAVA's names at every level
    assert outcomes[0].case.job == "kvm-two-disks.yaml" and outcomes[0].share == 1.0, outcomes[0].mismatches


def test_lavas_own_fixtures_validate_and_match_lavas_pipeline_refs() -> None:
    tree = tree_from_env()
    if tree is None or not (tree / "tests/lava_dispatcher/sample_jobs").is_dir():
        pytest.skip("LAVA's fixtures are in LAVA's source tree only (no package carries them): set "
                    "LAVA_DISPATCH_LAVA_TREE to a checkout of LAVA (2026.07) to compare with them")
    outcomes = run_all(lava_tree_source(tree), CASES)
    print(f"\nLAVA's fixtures in {tree}\n" + table(outcomes))
    for outcome in outcomes:
        if outcome.case.job in REFUSED:
            assert not outcome.accepted and outcome.problems, outcome.case  # refused, saying why
            continue
        assert outcome.accepted, (outcome.case, outcome.problems)
        assert outcome.timeouts_equal == outcome.timeouts_named, (outcome.case, outcome.mismatches)
    shares = sorted(o.share for o in outcomes if o.share is not None)
    assert shares and shares[len(shares) // 2] >= NAME_MATCH_FLOOR
