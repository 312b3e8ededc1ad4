"""supermask.structure: the one reading of --structure and the rules it carries, for every engine."""

import pytest

from supermask.errors import SupermaskError
from supermask.structure import NM, Structure


def test_parse_is_canonical_and_refuses_the_rest():
    assert str(Structure.parse(None)) == "unstructured" and not Structure.parse("unstructured").structured
    assert Structure.parse("nm:2:4").nm == NM(2, 4) and Structure.parse("nm:2:4").label() == " nm:2:4"
    assert Structure.parse("channel").channel and Structure.parse("channel").nm is None
    for bad in ("nm:4:4", "nm:0:4", "nm:2", "rows", "nm:1:65"):
        with pytest.raises(SupermaskError):
            Structure.parse(bad)


def test_density_rule_nm_fixes_it_the_rest_default():
    nm = Structure.parse("nm:1:4")
    assert nm.density(None, 0.5) == 0.25 and nm.density(0.25, 0.5) == 0.25
    with pytest.raises(SupermaskError, match="contradicts"):
        nm.density(0.5, 0.5)
    assert Structure.parse("channel").density(None, 0.5) == 0.5 and Structure().density(0.1, 0.5) == 0.1


def test_one_scope_rule_for_every_engine():
    """N:M refuses --scope global in every engine; channels allow it only where the channel scores
    are learned (the search), not where they are weights' L1 norms (IMP, pruning at init)."""
    from supermask import SearchConfig, resolve
    from supermask_imp import IMPConfig, PruneConfig

    assert Structure.parse("nm:2:4").scope(None) == "layerwise" == Structure.parse("channel").scope(None)
    refused = [SearchConfig(arch="lenet_300_100", structure="nm:2:4", scope="global")]
    for text in ("nm:2:4", "channel"):
        refused += [IMPConfig(arch="lenet_300_100", structure=text, scope="global"),
                    PruneConfig(arch="lenet_300_100", structure=text, scope="global")]
    for config in refused:
        with pytest.raises(SupermaskError, match="--scope global does not apply"):
            resolve(config)
    assert resolve(SearchConfig(arch="lenet_300_100", structure="channel", scope="global")).scope == "global"
