"""What a reply cost: the model's token counts (OpenAI's `usage`) and their price (pure, no Django models).

Prices are per million tokens, in the account's currency, from settings (`OPENAI_PRICE_*_PER_MTOK`). OpenAI
counts cached prompt tokens inside `prompt_tokens` and bills them at the cached rate, so the cost is
`(input - cached) * input_price + cached * cached_price + output * output_price`, divided by a million.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class TokenUsage:
    """The tokens one model call used, as the provider reported them."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Any) -> TokenUsage | None:
        """Read a Chat Completions `usage` object (or dict); None when the provider sent none."""
        if usage is None:
            return None

        def get(obj: Any, name: str) -> Any:
            return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)

        prompt, completion = get(usage, "prompt_tokens"), get(usage, "completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        details = get(usage, "prompt_tokens_details")
        cached = get(details, "cached_tokens") if details is not None else None
        return cls(
            input_tokens=max(prompt, 0),
            output_tokens=max(completion, 0),
            cached_input_tokens=min(max(cached, 0), prompt) if isinstance(cached, int) else 0,
        )


@dataclass(frozen=True)
class Prices:
    """Prices per million tokens (`settings.OPENAI_PRICE_*_PER_MTOK`)."""

    input: Decimal
    cached_input: Decimal
    output: Decimal

    @classmethod
    def from_settings(cls) -> Prices:
        """The configured prices; a value that is not a price counts as 0 (the system check outbound.E010
        names it, so this only happens with DEBUG on or checks skipped)."""
        from django.conf import settings

        return cls(
            input=parse_price(settings.OPENAI_PRICE_INPUT_PER_MTOK) or Decimal(0),
            cached_input=parse_price(settings.OPENAI_PRICE_CACHED_INPUT_PER_MTOK) or Decimal(0),
            output=parse_price(settings.OPENAI_PRICE_OUTPUT_PER_MTOK) or Decimal(0),
        )


PRICE_SETTINGS = (
    "OPENAI_PRICE_INPUT_PER_MTOK",
    "OPENAI_PRICE_CACHED_INPUT_PER_MTOK",
    "OPENAI_PRICE_OUTPUT_PER_MTOK",
)


def parse_price(value: object) -> Decimal | None:
    """A price per million tokens (zero or more), or None when `value` is not one."""
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None


def token_cost(*, input_tokens: int, output_tokens: int, cached_input_tokens: int, prices: Prices) -> Decimal:
    """The estimated cost of these tokens at these prices (see the module docstring for the formula)."""
    cached = min(cached_input_tokens, input_tokens)
    total = (
        (input_tokens - cached) * prices.input + cached * prices.cached_input + output_tokens * prices.output
    )
    return total / MILLION


def format_cost(cost: Decimal) -> str:
    """A cost for people: six decimals below a cent (a single reply costs fractions of one), else two."""
    return f"{cost:.6f}" if abs(cost) < Decimal("0.01") else f"{cost:,.2f}"
