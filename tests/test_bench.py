import subprocess
import sys


def test_loss_benchmark_prints_a_row_per_kernel():
    out = subprocess.run([sys.executable, "-m", "emktd.bench", "loss", "--batch", "1", "--repeats", "1",
                          "--device", "cpu"], capture_output=True, text=True, check=True, timeout=600).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ms" not in line]
    assert [row.split("|")[1].strip() for row in rows] == [
        "student (cavmae-tiny) step", "EM-KTD loss, linear kernel", "EM-KTD loss, poly kernel",
        "EM-KTD loss, rbf kernel"]
    for row in rows[1:]:
        share = float(row.split("|")[4].strip().rstrip(" %"))
        assert 0 < share < 100


def test_latency_benchmark_prints_both_paper_presets():
    out = subprocess.run([sys.executable, "-m", "emktd.bench", "latency", "--batch", "1", "--repeats", "1",
                          "--frames", "1", "--device", "cpu"], capture_output=True, text=True, check=True,
                         timeout=600).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| cavmae")]
    assert [r[0].strip() for r in rows] == ["cavmae-base", "cavmae-tiny"]
    base, tiny = (int(r[1].replace(",", "")) for r in rows)
    assert base > 10 * tiny
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    assert "cavmae-tiny is" in out and "x faster than cavmae-base" in out
