import numpy as np
import pandas as pd
import pytest

from specdiff_catalog.hashing import validation_mask
from specdiff_catalog.io.trainset import TrainingSet, TrainingSetWriter


@pytest.fixture
def trainset(tmp_path):
    rng = np.random.default_rng(1)
    wave = np.linspace(3600, 9824, 40)
    writer = TrainingSetWriter(tmp_path / "train", wave, chunk_rows=16)
    for k in range(5):
        ids = np.arange(k * 23, (k + 1) * 23)
        flux = rng.normal(size=(23, 40)).astype(np.float32)
        flux[:, 0] = ids  # each spectrum carries its row number
        writer.append(flux, np.ones_like(flux), pd.DataFrame({"TARGETID": 10**12 + ids, "Z": rng.random(23)}))
    return writer.close({"selection": "test"})


def test_split_is_stable_by_targetid_and_summarised(trainset):
    reopened = TrainingSet.open(trainset.path)
    expected = validation_mask(reopened.objects["TARGETID"].to_numpy())
    assert ((reopened.objects["SPLIT"] == "val").to_numpy() == expected).all()
    assert reopened.summary["n_val"] == expected.sum() and reopened.summary["n_objects"] == 115
    # the same TARGETIDs in another order land in the same split
    shuffled = np.random.default_rng(0).permutation(reopened.objects["TARGETID"].to_numpy())
    assert (
        validation_mask(shuffled) == validation_mask(np.sort(shuffled))[np.argsort(np.argsort(shuffled))]
    ).all()


def test_shuffled_batches_cover_the_split_once_with_matching_rows(trainset):
    seen = []
    for batch in trainset.batches("train", 10, shuffle=True, seed=3, buffer_chunks=2):
        assert (batch.flux[:, 0] == batch.rows).all()
        assert (batch.objects["ROW"].to_numpy() == batch.rows).all()
        seen.extend(batch.rows)
    assert sorted(seen) == sorted(trainset.rows("train"))
    first = next(trainset.batches("train", 10, shuffle=True, seed=4, buffer_chunks=2)).rows
    assert not np.array_equal(
        first, next(trainset.batches("train", 10, shuffle=True, seed=3, buffer_chunks=2)).rows
    )


def test_read_arbitrary_rows(trainset):
    flux, ivar = trainset.read(np.array([3, 50, 100]))
    assert list(flux[:, 0]) == [3, 50, 100] and (ivar == 1).all()


def test_photometry_parquet_opens_as_a_spectrum_free_training_set(tmp_path):
    path = tmp_path / "phot.parquet"
    pd.DataFrame({"targetid": np.arange(50), "z": np.linspace(0, 1, 50), "FLUX_G": np.ones(50)}).to_parquet(
        path
    )
    ts = TrainingSet.open(path)
    assert not ts.has_spectra and len(ts) == 50
    batches = list(ts.batches(None, 20))
    assert [len(b.rows) for b in batches] == [20, 20, 10] and batches[0].flux is None


def test_not_a_training_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training set"):
        TrainingSet.open(tmp_path)


def test_every_batch_but_the_last_is_full(trainset):
    # windows of 2 chunks x 16 rows hold ~29 training rows each; leftovers carry over
    sizes = [len(b.rows) for b in trainset.batches("train", 10, shuffle=True, seed=5, buffer_chunks=2)]
    n = len(trainset.rows("train"))
    assert sizes == [10] * (n // 10) + ([n % 10] if n % 10 else [])
