"""Smoke test of `manage.py bench_pages` at a tiny size: the figures' structure and a valid chain, not timings."""

from audit.models import AuditChainHead, AuditEvent
from audit.verify import verify_chain
from bench import pages


def test_bench_pages_fills_a_valid_chain_and_measures_every_page(db, settings, tmp_path):
    settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR = str(tmp_path)
    options = pages.Options(sizes=(2000,), requests=1, out_dir=None, separate_databases=False)

    result = pages.measure_size(2000, options, log=lambda line: None)

    assert result.fill["events"] == 2000 and result.fill["shares_added"] == 200
    assert result.rows["shares"] == 200
    assert verify_chain().ok  # the filled events plus every audit.read the pages recorded
    assert AuditChainHead.objects.get().seq == AuditEvent.objects.order_by("-seq").first().seq
    expected = {"dashboard", "shares", "approvals", "inbox", "audit_site", "audit_site_deep", "audit_team",
                "admin_changelist", "event_site", "event_team"}
    assert expected <= set(result.pages)
    for key, page in result.pages.items():
        assert page["queries"] > 0 and page["count"] == 1 and page["p50_ms"] >= 0, key
    assert result.export["streamed"] and result.export["rows"] >= 2000
    assert result.verify["ok"] and result.verify["events"] >= 2000
    assert result.verify["bare_loop"]["events"] == result.verify["events"]

    report = {"sizes": [result.__dict__], "goals": pages.goals([result])}
    assert {g["goal"] for g in report["goals"]} >= {"at most 12 queries per page"}
    assert "audit_site" in pages.table(report)
