import pandas as pd
import pytest

from ishcount.tables import CELL_SCHEMA, SPOT_SCHEMA, conform, empty_table


@pytest.mark.parametrize("schema", [SPOT_SCHEMA, CELL_SCHEMA])
def test_empty_table_has_schema_dtypes(schema):
    table = empty_table(schema)
    assert len(table) == 0
    assert {k: str(v) for k, v in table.dtypes.items()} == dict(schema)


def test_conform_orders_casts_and_names_missing_columns():
    table = conform(
        pd.DataFrame({"extra": [1], "b": [1.0], "a": [2]}), {"a": "float64", "b": "int64"}
    )
    assert table.columns.tolist() == ["a", "b", "extra"]
    assert table["b"].dtype == "int64"
    with pytest.raises(ValueError, match=r"\['c'\]"):
        conform(table, {"c": "int64"})
