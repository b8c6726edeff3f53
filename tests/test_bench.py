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
