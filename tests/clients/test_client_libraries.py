"""Real client libraries against `modelyard launch` on the real Gemma 3 270M: langchain-openai,
the OpenAI Agents SDK (through its Chat Completions model, and through the Responses API, its
default) and pydantic-ai. Each: chat, stream, a forced tool call, structured output without and with
tools. A 270M model answers poorly; what is checked is that each library gets what it parses.
"""

from __future__ import annotations

import os
import sys

import pytest
from pydantic import BaseModel, Field

from ..conftest import REPO
from ..e2e.server import launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
MODEL = "gemma-3-270m"


class City(BaseModel):
    city: str
    country: str


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    # The server runs from the project's venv (llama-cpp-python); this venv holds the clients.
    python = os.environ.get("MODELYARD_SERVER_PYTHON", sys.executable)
    with launched([str(REPO / "examples" / "gemma-3-270m.yaml")], tmp_path_factory.mktemp("s") / "server.log",
                  requires=(), python=python) as running:
        yield running["base"] + "/v1"


def test_langchain_openai(base) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=base, api_key="unused", model=MODEL, temperature=0, max_tokens=24, max_retries=0)
    answer = llm.invoke("Say hello.").content
    assert isinstance(answer, str) and answer
    assert "".join(chunk.content for chunk in llm.stream("Say hello.")) == answer  # temperature 0
    [call] = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?").tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert isinstance(llm.with_structured_output(City, method="json_schema").invoke("Paris?"), City)
    both = llm.with_structured_output(City, method="json_schema", tools=[get_weather], strict=True,
                                      include_raw=True).invoke("Which country is Paris in?")
    assert both["parsing_error"] is None
    assert isinstance(both["parsed"], City) or both["raw"].tool_calls[0]["name"] == "get_weather"


def test_openai_agents_sdk(base) -> None:
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    def chat_model() -> OpenAIChatCompletionsModel:  # one per event loop: the client binds to its loop
        return OpenAIChatCompletionsModel(model=MODEL, openai_client=AsyncOpenAI(base_url=base, api_key="unused",
                                                                                 max_retries=0))

    model = chat_model()
    brief = ModelSettings(max_tokens=24, temperature=0)
    assert Runner.run_sync(Agent(name="a", model=model, model_settings=brief), "Say hello.").final_output

    async def streamed() -> str:
        run = Runner.run_streamed(Agent(name="a", model=chat_model(), model_settings=brief), "Say hello.")
        async for _ in run.stream_events():
            pass
        return run.final_output

    import asyncio

    assert asyncio.run(streamed())
    model = chat_model()
    weather = function_tool(get_weather)
    called = Runner.run_sync(Agent(name="a", model=model, tools=[weather], tool_use_behavior="stop_on_first_tool",
                                   model_settings=ModelSettings(tool_choice="required", max_tokens=60)),
                             "Weather in Paris?")
    assert called.final_output.startswith("sunny in ")  # the tool ran with the model's arguments
    settings = ModelSettings(max_tokens=60, temperature=0)
    assert isinstance(Runner.run_sync(Agent(name="a", model=model, output_type=City, model_settings=settings),
                                      "Paris?").final_output, City)
    with_tools = Runner.run_sync(Agent(name="a", model=model, output_type=City, tools=[weather],
                                       model_settings=settings), "Which country is Paris in?", max_turns=6)
    assert isinstance(with_tools.final_output, City)


def test_openai_agents_sdk_over_the_responses_api(base) -> None:
    """The Agents SDK's default model speaks the Responses API. The SDK treats a reply cut by
    max_output_tokens (``response.incomplete``, as OpenAI sends it) as a failure, and the 270M
    model rarely stops on its own: so each run here is one the grammar ends, a forced call or a
    bounded structured answer."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)

    def responses_model() -> OpenAIResponsesModel:  # one per event loop: the client binds to its loop
        return OpenAIResponsesModel(model=MODEL, openai_client=AsyncOpenAI(base_url=base, api_key="unused",
                                                                           max_retries=0))

    ran: list[str] = []

    def weather(city: str) -> str:
        """Current weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    agent = Agent(name="a", model=responses_model(), tools=[function_tool(weather)],
                  tool_use_behavior="stop_on_first_tool",
                  model_settings=ModelSettings(tool_choice="required", max_tokens=120, temperature=0))
    result = Runner.run_sync(agent, "Weather in Paris?")
    assert ran and result.final_output == f"sunny in {ran[0]}"  # the tool ran with the model's arguments
    assert [item.type for item in result.new_items] == ["tool_call_item", "tool_call_output_item"]

    class Word(BaseModel):
        word: str = Field(max_length=12)

    shaped = Runner.run_sync(Agent(name="a", model=responses_model(), output_type=Word,
                                   model_settings=ModelSettings(max_tokens=60, temperature=0)), "Name a colour.")
    assert isinstance(shaped.final_output, Word)


def test_pydantic_ai(base) -> None:
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=base, api_key="unused"))
    settings = {"max_tokens": 60, "temperature": 0}
    assert Agent(model).run_sync("Say hello.", model_settings=settings).output

    async def streamed() -> str:
        async with Agent(model).run_stream("Say hello.", model_settings=settings) as run:
            return "".join([text async for text in run.stream_text(delta=True)])

    import asyncio

    assert asyncio.run(streamed())
    assert isinstance(Agent(model, output_type=City).run_sync("Paris?", model_settings=settings).output, City)
    assert isinstance(Agent(model, output_type=NativeOutput(City)).run_sync("Paris?", model_settings=settings).output,
                      City)
    with_tools = Agent(model, output_type=NativeOutput(City), tools=[get_weather])
    assert isinstance(with_tools.run_sync("Which country is Paris in?", model_settings=settings).output, City)
