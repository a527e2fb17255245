from __future__ import annotations

import os

import polars as pl
import pytest
from click.testing import CliRunner

from data.dataset import DatasetDir
from data.validate import validate_dataset
from pipelines.cli import cli
from tests.conftest import write_image

ARTICLES = """article_id,product_code,prod_name,product_type_no,product_type_name,product_group_name,graphical_appearance_name,colour_group_name,perceived_colour_value_name,department_name,index_name,section_name,garment_group_name,detail_desc
0108775015,108775,Strap top,253,Vest top,Garment Upper body,Solid,Black,Dark,Jersey Basic,Ladieswear,Womens Everyday Basics,Jersey Basic,Jersey top with narrow shoulder straps.
108775044,108775,Strap top,253,Vest top,Garment Upper body,Solid,White,Light,Jersey Basic,Ladieswear,Womens Everyday Basics,Jersey Basic,Jersey top with narrow shoulder straps.
0110065001,110065,OP T-shirt (Idro),306,Bra,Underwear,Stripe,Black,Dark,Clean Lingerie,Lingeriesand Tights,Womens Lingerie,"Under-, Nightwear","Microfibre T-shirt bra, underwired."
0111586001,111586,Shape Up 30 den 1p Tights,304,Underwear Tights,Socks & Tights,Solid,Black,Dark,Tights basic,Lingeriesand Tights,Womens Nightwear,Socks & Tights,
"""
CUSTOMERS = """customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code
00000dbacae5abe5e23885899a1fa44253a17956c6d1c3d25f88aa139fdfc657,,,ACTIVE,NONE,49,52043ee2162cf5aa7ee79974281641c6f11a68d276429a91f8ca0d4b6efa8100
0000423b00ade91418cceaf3b26c6af3dd342b51fd051eec9c12fb36984420fa,1.0,1.0,ACTIVE,Regularly,25,2973abc54daa8a5f8ccfe9362140c63247c5eee03f1d93f4c830291c32bc3057
000058a12d5b43e67d225668fa1f8d618c13dc232df0cad8ffe7ad4a1091e318,,,ACTIVE,NONE,24,64f17e6a330a85798e4998f62d0930d14db8db1c054af6c9090f7dd3e38380dc
"""
# a sampled file: only two of the three customers; a repeated row is a quantity of 2;
# the last article id is written without its leading zero
TRANSACTIONS = """t_dat,customer_id,article_id,price,sales_channel_id
2018-09-20,00000dbacae5abe5e23885899a1fa44253a17956c6d1c3d25f88aa139fdfc657,0108775015,0.0508305084745762,2
2018-09-20,00000dbacae5abe5e23885899a1fa44253a17956c6d1c3d25f88aa139fdfc657,0108775015,0.0508305084745762,2
2018-09-20,00000dbacae5abe5e23885899a1fa44253a17956c6d1c3d25f88aa139fdfc657,0110065001,0.0304915254237288,2
2018-09-22,0000423b00ade91418cceaf3b26c6af3dd342b51fd051eec9c12fb36984420fa,108775044,0.0169322033898305,1
"""


@pytest.fixture
def hm_src(tmp_path):
    src = tmp_path / "hm"
    src.mkdir()
    (src / "articles.csv").write_text(ARTICLES)
    (src / "customers.csv").write_text(CUSTOMERS)
    (src / "transactions_train.csv").write_text(TRANSACTIONS)
    for i, aid in enumerate(("0108775015", "0108775044", "0110065001")):  # 0111586001 has no image
        write_image(src / "images" / aid[:3] / f"{aid}.jpg", seed=i)
    return src


def _check_import(out):
    ds = validate_dataset(out)
    items = ds.items.sort("item_id")
    assert items["item_id"].to_list() == ["0108775015", "0108775044", "0110065001", "0111586001"]
    assert items.filter(pl.col("item_id") == "0111586001")["image_path"].to_list() == [None]
    assert ds.report.tables["items"].notes["items_without_image"] == 1
    assert items["title"][0] == "Strap top" and items["category"][0] == "Vest top"
    assert "narrow shoulder straps" in items["description"][0] and "Jersey Basic" in items["description"][0]
    inter = ds.interactions.sort("item_id")
    assert inter.height == 3 and set(inter["event"]) == {"purchase"}
    assert inter.filter(pl.col("item_id") == "0108775015")["quantity"].to_list() == [2]
    assert str(inter["ts"][0]) == "2018-09-20 00:00:00+00:00"
    assert ds.users.height == 3 and ds.reviews.height == 0
    for rep in ds.report.tables.values():
        assert rep.quarantined == 0, rep  # the linked image folder is not an escape
    return ds


def test_import_hm_csv_links_images(hm_src, tmp_path):
    result = CliRunner().invoke(cli, ["data", "import-hm", str(hm_src), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "4 articles (1 without image)" in result.output
    assert (tmp_path / "out" / "images").is_symlink()
    _check_import(tmp_path / "out")
    manifest = DatasetDir(tmp_path / "out").manifest()
    assert manifest.extra["import_report"]["transaction_rows"] == 4
    assert manifest.linked_dirs == {"images": str((hm_src / "images").resolve())}


def test_import_hm_parquet_articles_with_numeric_ids(hm_src, tmp_path):
    articles = pl.read_csv(hm_src / "articles.csv", schema_overrides={"article_id": pl.String})
    articles.with_columns(pl.col("article_id").cast(pl.Int64)).write_parquet(hm_src / "articles.parquet")
    os.remove(hm_src / "articles.csv")
    from data.adapters.hm import import_hm

    import_hm(hm_src, tmp_path / "out", copy_images=True)
    assert not (tmp_path / "out" / "images").is_symlink()
    _check_import(tmp_path / "out")


def test_a_symlink_not_made_by_the_importer_is_an_escape(hm_src, tmp_path, make_dataset):
    dd = make_dataset()
    os.symlink(hm_src / "images", dd.root / "elsewhere")
    items = dd.read_raw("items").with_columns(pl.lit("elsewhere/010/0108775015.jpg").alias("image_path"))
    dd.write_table("items", items)
    dd.write_manifest("fixture", "test")
    rep = validate_dataset(dd.root).report.tables["items"]
    assert rep.reasons == {"image_path_escapes_dataset": 4}


def test_reimport_over_a_loaded_dataset_is_verified_afresh(hm_src, tmp_path):
    from data.adapters.hm import import_hm
    from data.validate import load_dataset

    out = tmp_path / "out"
    import_hm(hm_src, out)
    first = load_dataset(out)  # caches the verified hashes
    with open(hm_src / "transactions_train.csv", "a") as fh:
        fh.write(TRANSACTIONS.splitlines()[-1] + "\n")  # one more purchase of 0108775044
    import_hm(hm_src, out)
    again = load_dataset(out)
    assert again.manifest.fingerprint != first.manifest.fingerprint
    assert again.interactions.filter(pl.col("item_id") == "0108775044")["quantity"].to_list() == [2]


def test_import_refuses_a_folder_in_use(hm_src, tmp_path):
    from data.adapters.hm import import_hm
    from data.io import FolderLockError, folder_lock

    with folder_lock(tmp_path / "out", what="another import"), pytest.raises(FolderLockError, match="in use by PID"):
        import_hm(hm_src, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
