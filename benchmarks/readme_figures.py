"""The README's picture of the `--html` view: one pruned chain drawn as the HTML page shows it, as a PNG.

    python -m jaxprune.experiments.prune --flagfile=experiments/demo.flags
    python benchmarks/readme_figures.py --input=outputs/demo/pruned.jsonl --id=demo-2 \
        --output=docs/images/chain_view.png

A static rendering (there may be no browser where the README is made): reasoning tokens on the background colour of
the step that deleted them, from `jaxprune.analysis.chain_view`'s own colour function; at the slider's position
(`--keep_ratio`, by default the record's own) the deleted tokens are faded and struck through, the kept ones bold.
"""

import colorsys
import re
import textwrap
import warnings

from absl import app, flags

from jaxprune.analysis.chain_view import deletion_steps, step_colour, token_texts
from jaxprune.checkpoints import load_tokenizer
from jaxprune.data.records import read_jsonl
from jaxprune.plotting import pyplot, save_figure

_INPUT = flags.DEFINE_string("input", "outputs/demo/pruned.jsonl", "Prune CLI output (JSONL).")
_ID = flags.DEFINE_string("id", None, "The chain to draw (default: the first record).")
_OUTPUT = flags.DEFINE_string("output", "docs/images/chain_view.png", "PNG to write.")
_KEEP_RATIO = flags.DEFINE_float("keep_ratio", None, "Mark deleted the deletions down to this keep ratio, as the "
                                  "page's slider does (default: all of the record's).")
_MODEL = flags.DEFINE_string("model", None, "Tokenizer's --model (default: the record's `pruner`).")
_COLUMNS = 72  # characters per reasoning line before wrapping at a token boundary
_FONT = 11  # points; a monospace character is 0.602 em wide (DejaVu Sans Mono), so columns map to inches exactly
_CHAR, _LINE = 0.602 * _FONT / 72, 1.7 * _FONT / 72  # inches: character width, and the page's line-height 1.7


def rgb(css_hsl):
    """chain_view's CSS `hsl(h, s%, l%)` as a matplotlib RGB triple (the colour logic stays in chain_view)."""
    hue, saturation, lightness = (float(v) for v in re.findall(r"[\d.]+", css_hsl))
    return colorsys.hls_to_rgb(hue / 360, lightness / 100, saturation / 100)


def main(argv):
    del argv
    records = [record for _, record in read_jsonl(_INPUT.value)]
    record = next(r for r in records if _ID.value in (None, str(r["id"])))
    tokenizer = load_tokenizer(_MODEL.value or record["pruner"])
    steps, total = deletion_steps(record), len(record["deletion_order"])
    # The slider: the page marks the first `limit` deletions gone, as its script computes it.
    limit = total if _KEEP_RATIO.value is None else min(total, round(len(steps) * (1 - _KEEP_RATIO.value)))

    # Lay the reasoning out in character cells (the view's text is monospace, pre-wrap) before sizing the figure.
    cells, row, col = [], 0, 0
    for text, step in zip(token_texts(tokenizer, record["reasoning_token_ids"]), steps):
        for number, piece in enumerate(text.split("\n")):
            if number or (col and col + len(piece) > _COLUMNS):
                if not number:  # a wrapped line starts at the word: pre-wrap leaves the space at the line's end
                    piece = piece.lstrip(" ")
                row, col = row + 1, 0
            if piece:
                cells.append((row, col, piece, step))
                col += len(piece)
    rows = cells[-1][0] + 1 if cells else 0  # a trailing newline opens no visible line
    question = textwrap.wrap(f"Q: {record['question']}", 80)  # the sans-serif font's ~80 characters a line
    width, height = _COLUMNS * _CHAR + 0.6, (rows + len(question) + 5) * _LINE + 0.5
    plt = pyplot()
    figure = plt.figure(figsize=(width, height))
    axes = figure.add_axes((0, 0, 1, 1), xlim=(0, width), ylim=(-height, 0))  # data units are inches
    axes.axis("off")
    left, y = 0.3, -0.3
    axes.text(left, y, f"{record['id']} \u00b7 {record.get('method', 'greedy')} \u00b7 keep ratio "
              f"{1 - limit / len(steps):.2f}", color="#666", fontsize=_FONT - 1, va="top")
    axes.text(left, y - _LINE, "\n".join(question), fontsize=_FONT, va="top", linespacing=1.5)
    top = y - (len(question) + 1.5) * _LINE
    for r, c, piece, step in cells:
        x, base = left + c * _CHAR, top - r * _LINE
        gone = step is not None and step <= limit
        alpha = 0.45 if gone else 1.0  # the page's `.gone`: opacity 0.45 and a line through
        if step is not None:  # kept tokens have no background
            axes.add_patch(plt.Rectangle((x, base - _LINE * 0.85), len(piece) * _CHAR, _LINE * 0.8,
                                         color=rgb(step_colour(step, total)), alpha=alpha, lw=0))
        axes.text(x, base - _LINE * 0.45, piece, family="DejaVu Sans Mono", fontsize=_FONT, va="center",
                  weight="bold" if step is None else "normal", alpha=alpha)
        if gone:
            axes.plot([x, x + len(piece) * _CHAR], [base - _LINE * 0.42] * 2, color="#222", lw=0.8, alpha=alpha)
    y = top - (rows + 0.5) * _LINE
    axes.text(left, y, f"A: {record['answer']}", fontsize=_FONT, va="top")
    # Colour key: one cell per deletion step, pale (deleted first, least important) to dark red (deleted last).
    y -= 1.6 * _LINE
    axes.text(left, y - 0.3 * _LINE, "deleted first", fontsize=_FONT - 1, va="center")
    key_left, key_width = left + 1.0, 2.6
    for step in range(1, total + 1):
        axes.add_patch(plt.Rectangle((key_left + (step - 1) * key_width / total, y - 0.7 * _LINE),
                                     key_width / total, 0.8 * _LINE, color=rgb(step_colour(step, total)), lw=0))
    axes.text(key_left + key_width + 0.1, y - 0.3 * _LINE, f"deleted last (step {total})", fontsize=_FONT - 1,
              va="center")
    axes.text(width - 0.3, y - 0.3 * _LINE, "kept", family="DejaVu Sans Mono", weight="bold", fontsize=_FONT,
              va="center", ha="right")
    with warnings.catch_warnings():  # save_figure's tight_layout has nothing to do: the one axes fills the figure
        warnings.simplefilter("ignore", UserWarning)
        save_figure(figure, _OUTPUT.value, dpi=150)
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
