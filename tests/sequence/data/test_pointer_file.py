import numpy as np
import pytest

from sequence.data import read_pointer_file, write_pointer_file


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    points = [rng.random((n, 2)) for n in (3, 5, 8)]
    outputs = [[1, 2, 3, 1], [2, 5, 4, 2], [1, 8, 3, 6, 1]]
    path = write_pointer_file(tmp_path / "hull.txt", points, outputs)
    first = path.read_text().splitlines()[0].split()
    assert len(first) == 2 * 3 + 1 + 4 and first[6] == "output"
    back_points, back_outputs = read_pointer_file(path)
    assert back_outputs == outputs
    for a, b in zip(points, back_points):
        assert np.array_equal(a, b)        # exact: floats written as their round-trip repr


def test_reads_the_papers_line_format(tmp_path):
    path = tmp_path / "paper.txt"
    path.write_text("0.1 0.2 0.9 0.1 0.5 0.8 0.5 0.4 output 1 2 3 1\n\n")
    points, outputs = read_pointer_file(path)
    assert outputs == [[1, 2, 3, 1]] and points[0].shape == (4, 2) and points[0][3, 1] == 0.4


@pytest.mark.parametrize("line, message", [
    ("0.1 0.2 0.3 0.4 0.5 0.6 1 2 3", "one 'output' word, got 0"),
    ("0.1 0.2 0.3 output 1 2", "multiple of 2 coordinates before 'output', got 3"),
    ("0.1 0.2 0.3 x output 1 2", "a coordinate is not a number"),
    ("0.1 0.2 0.3 0.4 output 0 1 2", "1-based into 2 points, got [0]"),
    ("0.1 0.2 0.3 0.4 output 1 3", "1-based into 2 points, got [3]"),
    ("0.1 0.2 0.3 0.4 output", "no indices after 'output'"),
    ("0.1 0.2 0.3 0.4 output 1 b", "output indices must be integers"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text("0.1 0.2 0.3 0.4 0.5 0.6 output 1 2 3 1\n" + line + "\n")
    with pytest.raises(ValueError) as info:
        read_pointer_file(path)
    assert str(info.value).startswith(f"{path}:2: ") and message in str(info.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_pointer_file(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no instances"):
        read_pointer_file(tmp_path / "empty.txt")
