"""Shows pruned chains: reasoning tokens coloured by the step at which they were deleted, in a terminal or as a
self-contained HTML page (with a slider that replays the deletions, and optionally colours by functional role)."""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

# Early deletions (least important) are grey, late ones warm; kept tokens are bold.
_TERMINAL_PALETTE = (244, 110, 75, 178, 208, 196)


def token_texts(tokenizer, token_ids: Sequence[int], context: int = 4) -> list[str]:
    """Each token's share of the decoded text: what decoding it after the `context` tokens before it adds.
    (Decoding tokens one by one drops SentencePiece's leading spaces and splits multi-byte characters.)"""
    texts = []
    for index in range(len(token_ids)):
        before = list(token_ids[max(0, index - context): index])
        texts.append(tokenizer.decode(before + [token_ids[index]])[len(tokenizer.decode(before)):])
    return texts


def deletion_steps(record: dict[str, Any]) -> list[int | None]:
    """For each reasoning token, the 1-based step at which it was deleted, or None if kept."""
    steps: list[int | None] = [None] * len(record["reasoning_token_ids"])
    for step, position in enumerate(record["deletion_order"], start=1):
        steps[position] = step
    return steps


def terminal_view(record: dict[str, Any], tokenizer) -> str:
    """The chain's reasoning with ANSI colours by deletion step, and a legend."""
    steps = deletion_steps(record)
    total = max(len(record["deletion_order"]), 1)
    pieces = []
    for text, step in zip(token_texts(tokenizer, record["reasoning_token_ids"]), steps):
        if step is None:
            pieces.append(f"\033[1m{text}\033[0m")
        else:
            colour = _TERMINAL_PALETTE[min((step - 1) * len(_TERMINAL_PALETTE) // total, len(_TERMINAL_PALETTE) - 1)]
            pieces.append(f"\033[38;5;{colour}m{text}\033[0m")
    legend = " ".join(f"\033[38;5;{c}m\u2588\033[0m" for c in _TERMINAL_PALETTE)
    kept = len(steps) - len(record["deletion_order"])
    header = (f"[{record['id']}] {record.get('method', 'greedy')}, keep {kept}/{len(steps)} "
              f"({record['achieved_keep_ratio']:.2f})   deleted first {legend} deleted last   \033[1mkept\033[0m")
    return f"{header}\n{''.join(pieces)}\n\033[2m{record['answer']}\033[0m\n"


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>jaxprune: pruned chains</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }}
.chain {{ border: 1px solid #ddd; border-radius: 6px; padding: 0.8rem 1rem; margin: 1rem 0; }}
.reasoning {{ font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.7; }}
.tok {{ border-radius: 3px; }}
.tok.gone {{ opacity: 0.45; text-decoration: line-through; }}
.kept {{ font-weight: 600; }}
.meta {{ color: #666; font-size: 0.9em; }}
</style></head><body>
<h1>Pruned chains</h1>
<p>Reasoning tokens are coloured by the step at which the pruner deleted them: pale first (least important), dark
red last; bold tokens survive. Move the slider to replay the deletions.</p>
<label>deletions shown: <input id="slider" type="range" min="0" max="100" value="100"> <span id="pct">100</span>%</label>
{role_control}
{chains}
<script>
const data = {data};
const slider = document.getElementById('slider');
function show() {{
  document.getElementById('pct').textContent = slider.value;
  document.querySelectorAll('.chain').forEach((el, i) => {{
    const limit = Math.round(data[i].total * slider.value / 100);
    el.querySelectorAll('.tok').forEach(t => {{
      const step = Number(t.dataset.step);
      t.classList.toggle('gone', step > 0 && step <= limit);
    }});
    el.querySelector('.ratio').textContent = (1 - limit / data[i].length).toFixed(2);
  }});
}}
slider.addEventListener('input', show); show();
const colouring = document.getElementById('colouring');
if (colouring) colouring.addEventListener('change', () => {{
  document.querySelectorAll('.tok').forEach(t => {{
    t.style.background = colouring.value === 'role' ? t.dataset.rolecolour : (t.dataset.stepcolour || '');
  }});
}});
</script></body></html>
"""


def step_colour(step: int, total: int) -> str:
    fraction = (step - 1) / max(total - 1, 1)
    lightness = 88 - 45 * fraction
    return f"hsl({50 - 50 * fraction:.0f}, 85%, {lightness:.0f}%)"


# Functional roles (jaxprune/analysis/roles.py), in priority order.
ROLE_COLOURS = {"SYMBOLIC_MATH": "#f4a3a3", "META_DISCOURSE": "#a9c8f5", "COREFERENCE": "#f7d48b",
                "ENTITY_NAME": "#a8e0b0", "VERBAL_MATH": "#d5b3ee", "FUNCTION": "#e4e4e4"}


def _role_control() -> str:
    legend = " ".join(f'<span class="tok" style="background:{colour}">{role.lower()}</span>'
                      for role, colour in ROLE_COLOURS.items())
    return (f'<p><label>colour by: <select id="colouring"><option value="step">deletion step</option>'
            f'<option value="role">functional role</option></select></label> {legend}</p>')


def html_view(records: Sequence[dict[str, Any]], tokenizer,
              roles: Sequence[Sequence[str]] | None = None) -> str:
    """One self-contained HTML page for several pruned chains; with `roles` (one per reasoning token of each
    chain) the tokens can also be coloured by functional role."""
    blocks, data = [], []
    for index, record in enumerate(records):
        steps = deletion_steps(record)
        total = len(record["deletion_order"])
        chain_roles = roles[index] if roles is not None else [None] * len(steps)
        spans = []
        for text, step, role in zip(token_texts(tokenizer, record["reasoning_token_ids"]), steps, chain_roles):
            role_data = (f' data-rolecolour="{ROLE_COLOURS[role]}"' if role else "")
            role_title = f", {role.lower()}" if role else ""
            if step is None:
                spans.append(f'<span class="tok kept" data-step="0"{role_data} title="kept{role_title}">'
                             f'{html.escape(text)}</span>')
            else:
                colour = step_colour(step, total)
                spans.append(f'<span class="tok" data-step="{step}" data-stepcolour="{colour}"{role_data} '
                             f'style="background:{colour}" title="deleted at step {step} of {total}{role_title}">'
                             f'{html.escape(text)}</span>')
        blocks.append(
            f'<div class="chain"><div class="meta">{html.escape(str(record["id"]))} &middot; '
            f'{html.escape(record.get("method", "greedy"))} &middot; keep ratio <span class="ratio"></span></div>'
            f'<p><b>Q:</b> {html.escape(record["question"])}</p>'
            f'<div class="reasoning">{"".join(spans)}</div>'
            f'<p><b>A:</b> {html.escape(record["answer"])}</p></div>')
        data.append({"total": total, "length": len(steps)})
    return _PAGE.format(chains="\n".join(blocks), data=json.dumps(data),
                        role_control=_role_control() if roles is not None else "")
