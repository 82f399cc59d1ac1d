"""Drives an ember server with the official `openai` SDK, as a vLLM user's code would, and parses
/metrics with prometheus_client's text parser. Exits non-zero (AssertionError) on any mismatch.

usage: openai_sdk_check.py BASE_URL MODEL API_KEY
"""
import json
import re
import sys
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

base, model, key = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key)

# /v1/models
models = client.models.list()
assert [m.id for m in models.data] == [model], models
assert models.data[0].object == "model"

# A wrong key is an AuthenticationError (401).
try:
    openai.OpenAI(base_url=f"{base}/v1", api_key="wrong").models.list()
    raise AssertionError("wrong key accepted")
except openai.AuthenticationError:
    pass

# Chat.
chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    temperature=0,
    max_tokens=24,
)
assert chat.object == "chat.completion"
assert "Paris" in chat.choices[0].message.content, chat
assert chat.choices[0].finish_reason in ("stop", "length")
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

# Streaming chat with include_usage: the last chunk has no choices and carries usage.
chunks = list(
    client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
)
assert chunks[0].choices[0].delta.role == "assistant"
assert chunks[-1].choices == [] and chunks[-1].usage is not None, chunks[-1]
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == chat.choices[0].message.content, (text, chat.choices[0].message.content)
assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

# Completions with echo + logprobs (lm-eval's loglikelihood request), max_tokens 1 and 0.
prompt = "The capital of France is Paris"
for max_tokens in (1, 0):
    c = client.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, echo=True, logprobs=1, temperature=0, seed=1
    )
    lp = c.choices[0].logprobs
    n = c.usage.prompt_tokens
    assert len(lp.tokens) == n + max_tokens, (len(lp.tokens), n)
    assert lp.token_logprobs[0] is None
    assert all(isinstance(x, float) for x in lp.token_logprobs[1:]), lp.token_logprobs
    assert lp.top_logprobs[0] is None and all(isinstance(t, dict) for t in lp.top_logprobs[1:])
    assert c.choices[0].text.startswith(prompt)
    assert len(lp.text_offset) == len(lp.tokens)

# Streaming completions.
parts = list(client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=8, temperature=0, stream=True))
assert all(p.object == "text_completion" for p in parts)
assert parts[-1].choices[0].finish_reason == "length"

# Structured outputs. A pydantic model through the SDK's parse helper (response_format json_schema,
# strict: every field required, no others).
from pydantic import BaseModel, Field


class Capital(BaseModel):
    city: str = Field(max_length=20)
    country: str = Field(max_length=20)
    population_millions: int


parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
parsed = parse(
    model=model,
    messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
    response_format=Capital,
    temperature=0,
    max_tokens=100,
)
assert isinstance(parsed.choices[0].message.parsed, Capital), parsed
assert parsed.choices[0].finish_reason == "stop", parsed

# vLLM's own fields through extra_body: guided_choice on chat, a regex (structured_outputs) on
# completions, sampled.
answer = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Is Paris in France? Answer yes or no."}],
    temperature=0,
    extra_body={"guided_choice": ["yes", "no"]},
)
assert answer.choices[0].message.content in ("yes", "no"), answer
for seed in range(3):
    year = client.completions.create(
        model=model,
        prompt="The Eiffel Tower was finished in the year",
        max_tokens=10,
        temperature=1.0,
        seed=seed,
        extra_body={"structured_outputs": {"regex": " 1[0-9]{3}"}},
    )
    assert re.fullmatch(r" 1[0-9]{3}", year.choices[0].text), year
    assert year.choices[0].finish_reason == "stop", year

# Streamed: the deltas join into JSON that parses.
deltas = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "A JSON object with your name."}],
    temperature=0,
    max_tokens=60,
    stream=True,
    response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {
        "type": "object", "properties": {"name": {"type": "string", "maxLength": 16}},
        "required": ["name"], "additionalProperties": False}}},
)
text = "".join(c.choices[0].delta.content or "" for c in deltas if c.choices)
assert set(json.loads(text)) == {"name"}, text

# Forced tool calls (no parser needed): a named tool_choice and "required" answer with tool_calls whose
# arguments fit the function's parameters; streamed, the argument deltas join into them.
tools = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                    "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                    "required": ["city"], "additionalProperties": False}}},
]
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
named = client.chat.completions.create(
    model=model, messages=ask, tools=tools, temperature=0, max_tokens=40,
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
)
call = named.choices[0].message.tool_calls[0]
assert call.type == "function" and call.function.name == "get_weather", named
assert set(json.loads(call.function.arguments)) == {"city"}, call
required = client.chat.completions.create(
    model=model, messages=ask, tools=tools, temperature=0, max_tokens=80, tool_choice="required",
)
calls = required.choices[0].message.tool_calls
assert calls and all(c.function.name in ("get_weather", "get_time") for c in calls), required
assert all(set(json.loads(c.function.arguments)) == {"city"} for c in calls), required
assert required.choices[0].finish_reason == "tool_calls", required
streamed = list(client.chat.completions.create(
    model=model, messages=ask, tools=tools, temperature=0, max_tokens=40, stream=True,
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
))
deltas = [t for c in streamed if c.choices for t in (c.choices[0].delta.tool_calls or [])]
assert deltas[0].function.name == "get_weather" and deltas[0].id, deltas
arguments = "".join(d.function.arguments or "" for d in deltas)
assert arguments == call.function.arguments, (arguments, call.function.arguments)

# A constraint that does not compile is the SDK's BadRequestError.
try:
    client.completions.create(model=model, prompt="x", max_tokens=4, extra_body={"guided_regex": "a(b"})
    raise AssertionError("bad regex accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and "structured output" in str(e), e

# Errors come back as the SDK's typed exceptions.
try:
    client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    raise AssertionError("unknown model accepted")
except openai.NotFoundError:
    pass
try:
    client.completions.create(model=model, prompt="x", max_tokens=1, temperature=-1)
    raise AssertionError("bad temperature accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400

# /metrics through prometheus_client's parser, with vLLM's names.
body = urllib.request.urlopen(f"{base}/metrics").read().decode()
families = {f.name: f for f in text_string_to_metric_families(body)}
for name in (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:request_success",
    "vllm:time_to_first_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:cache_config_info",
):
    assert name in families, (name, sorted(families))
gen = [s for s in families["vllm:generation_tokens"].samples if s.name.endswith("_total")]
assert gen and gen[0].labels["model_name"] == model and gen[0].value > 0, gen
print("openai SDK checks passed")
