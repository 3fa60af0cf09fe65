"""TALLRec's prompts, built from a sample's history and a candidate item.

The wording is TALLRec's released one (Bao et al., RecSys 2023: its data files' instruction and input,
inside the Alpaca template its LoRA scripts use); the answer is read at the position after
"### Response:\n". In-context demonstrations are earlier samples with their answers ("Yes." / "No."),
placed before the query as further Input / Response pairs.

A prompt longer than `max_length` tokens loses its oldest history items first (counted in
`PromptBuilder.dropped_items`), then its first (least relevant) demonstrations; never the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

PREAMBLE = ("Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.")
INSTRUCTION = ("Given the user's preference and unpreference, identify whether the user will like the target "
               "{noun} by answering \"Yes.\" or \"No.\".")
ANSWERS = {1: "Yes.", 0: "No."}


def tallrec_input(liked: Sequence[str], disliked: Sequence[str], target: str, noun: str) -> str:
    """TALLRec's `input` field: the liked and disliked history items, then the question about the target."""
    def quote(names: Sequence[str]) -> str:
        return ", ".join(f'"{n}"' for n in names)

    return (f"User Preference: {quote(liked)}\nUser Unpreference: {quote(disliked)}\n"
            f"Whether the user will like the target {noun} \"{target}\"?")


def alpaca(instruction: str, blocks: Sequence[tuple[str, Optional[str]]]) -> str:
    """The Alpaca template around an instruction and (input, response) blocks; the last block's response is
    left open (None): the model answers it."""
    parts = [PREAMBLE, f"### Instruction:\n{instruction}"]
    for text, answer in blocks:
        parts.append(f"### Input:\n{text}")
        parts.append("### Response:\n" + (answer if answer is not None else ""))
    return "\n\n".join(parts)


@dataclass
class Sample:
    """One history sample: (item, liked) pairs oldest first, a candidate item, and its label when known."""

    history: list[tuple[int, bool]]
    item: int
    label: Optional[int] = None


@dataclass
class PromptBuilder:
    item_names: Sequence[str]  # how a prompt names item i
    noun: str = "item"  # TALLRec's "target movie" / "target book"
    max_length: int = 512  # token budget of a whole prompt
    count_tokens: Optional[Callable[[list[str]], list[int]]] = None  # the tokenizer's lengths (None: no budget)
    instruction: Optional[str] = None  # None: TALLRec's
    dropped_items: int = 0  # history items left out to fit the budget, over all prompts built
    dropped_demos: int = 0
    _instruction: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._instruction = self.instruction or INSTRUCTION.format(noun=self.noun)

    def input_text(self, sample: Sample) -> str:
        liked = [self.item_names[i] for i, y in sample.history if y]
        disliked = [self.item_names[i] for i, y in sample.history if not y]
        return tallrec_input(liked, disliked, self.item_names[sample.item], self.noun)

    def _render(self, query: Sample, demos: Sequence[Sample]) -> str:
        blocks = [(self.input_text(d), ANSWERS[int(d.label)]) for d in demos]
        return alpaca(self._instruction, blocks + [(self.input_text(query), None)])

    def build(self, query: Sample, demos: Sequence[Sample] = ()) -> str:
        """The prompt of `query` after `demos`, within the token budget."""
        demos = list(demos)
        text = self._render(query, demos)
        if self.count_tokens is None or self.count_tokens([text])[0] <= self.max_length:
            return text
        history = list(query.history)
        while True:
            if history:
                history.pop(0)  # the oldest item goes first
                self.dropped_items += 1
            elif demos:
                demos.pop(0)  # the first: demonstrations are ordered least to most relevant
                self.dropped_demos += 1
            else:
                raise ValueError(f"the prompt of item {self.item_names[query.item]!r} alone takes "
                                 f"{self.count_tokens([text])[0]} tokens, more than llm.max_length={self.max_length}")
            text = self._render(Sample(history, query.item), demos)
            if self.count_tokens([text])[0] <= self.max_length:
                return text
