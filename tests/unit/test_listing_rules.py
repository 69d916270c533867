"""How lists answered from memory are narrowed and paged (shared.domain.listing): every
filter before the page, and the count is the total."""

from __future__ import annotations

from shared.domain.listing import Filter, narrowed, paged
from shared.projections.read import Paging

ITEMS = [{"id": f"id-{i}", "name": f"vm-{i}", "state": "Running" if i % 2 else "Stopped",
          "zoneid": "z1" if i < 6 else "z2", "displayname": f"Web {i}"} for i in range(10)]


def test_filters_apply_before_the_page_and_the_count_is_the_total() -> None:
    kept = narrowed(ITEMS, Filter(state="running"))
    assert [i["id"] for i in kept] == ["id-1", "id-3", "id-5", "id-7", "id-9"]
    page, total = paged(kept, Paging(limit=2, offset=2))
    assert [i["id"] for i in page] == ["id-5", "id-7"] and total == 5
    assert paged(kept, Paging(limit=2, offset=10)) == ([], 5)
    assert paged(kept, None) == (kept, 5)


def test_each_filter() -> None:
    assert [i["id"] for i in narrowed(ITEMS, Filter(id="id-3"))] == ["id-3"]
    assert [i["id"] for i in narrowed(ITEMS, Filter(ids=["id-1", "id-8"]))] == ["id-1", "id-8"]
    assert [i["id"] for i in narrowed(ITEMS, Filter(name="VM-4"))] == ["id-4"]
    assert [i["id"] for i in narrowed(ITEMS, Filter(keyword="WEB 7"))] == ["id-7"]
    assert len(narrowed(ITEMS, Filter(zone_id="z2"))) == 4
    assert narrowed(ITEMS, Filter(zone_id="z2", state="Running", keyword="9")) == [ITEMS[9]]
    assert narrowed(ITEMS, Filter(), lambda i: i["id"] == "id-0") == [ITEMS[0]]
