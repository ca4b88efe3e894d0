"""The syllabus's ``ConversationBufferMemory`` chain (§15.7.1), rebuilt three ways on the
offline model:

1. **plain Python** (:class:`PlainConversation`): a list of messages, the chat template, one
   ``generate`` call per turn — everything the frameworks do, in 20 lines;
2. **LangChain runnables** (:func:`langchain_chain`): ``ChatPromptTemplate | chat model``,
   with a ``MessagesPlaceholder`` for the history (the LCEL pipe replaces ``LLMChain``);
3. **LangGraph persistence** (:func:`langgraph_conversation`): the mechanism LangChain now
   recommends for memory (``RunnableWithMessageHistory`` is deprecated since
   langchain-core 1.3.3): a one-node ``StateGraph`` over ``MessagesState`` compiled with an
   ``InMemorySaver`` checkpointer, one thread per conversation (``thread_id``).

The chat model is :class:`LocalChatModel`, a ``langchain_core`` ``BaseChatModel`` around a
``transformers`` model and its chat template. LangChain's own Hugging Face integration
(``langchain_huggingface.ChatHuggingFace`` over ``HuggingFacePipeline``) does the same; its
current release pins ``huggingface-hub<2`` while the course's environment has hub 2.x, so
the course ships this adapter (same rendering: the tokenizer's chat template, greedy decoding).
"""

from __future__ import annotations

from typing import Any

from course_utils import checks
from course_utils.prompting.llm import chat_generate

SYSTEM = "You are a helpful assistant."


def _role(message) -> str:
    return {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}.get(message.type, message.type)


def _chat_model_class():
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class LocalChatModel(BaseChatModel):
        """A LangChain chat model over a local ``transformers`` model: messages → the
        tokenizer's chat template → greedy ``generate`` → an ``AIMessage``."""

        model: Any
        tokenizer: Any
        max_new_tokens: int = 48

        @property
        def _llm_type(self) -> str:
            return "course-local-transformers"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
            conv = [{"role": _role(m), "content": m.content} for m in messages]
            text = chat_generate(self.model, self.tokenizer, [conv], max_new_tokens=self.max_new_tokens)[0][0]
            for s in stop or []:
                text = text.split(s)[0]
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    return LocalChatModel


def local_chat_model(model, tokenizer, max_new_tokens: int = 48):
    """A :class:`LocalChatModel` (LangChain ``BaseChatModel``) over ``model``."""
    checks.positive_int(max_new_tokens=max_new_tokens)
    return _chat_model_class()(model=model, tokenizer=tokenizer, max_new_tokens=max_new_tokens)


def langchain_chain(chat_model, system: str = SYSTEM):
    """``prompt | chat_model`` with the history as a ``MessagesPlaceholder`` — today's form of
    the syllabus's ``LLMChain(prompt=PromptTemplate(history, input))``."""
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

    prompt = ChatPromptTemplate.from_messages([("system", system), MessagesPlaceholder("history"),
                                               ("human", "{input}")])
    return prompt | chat_model


def langgraph_conversation(chat_model, system: str = SYSTEM):
    """A conversation whose memory is LangGraph's checkpointer: call
    ``app.invoke({"messages": [("user", text)]}, {"configurable": {"thread_id": "1"}})``;
    each thread keeps its own message list across calls."""
    from langchain_core.messages import SystemMessage
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, MessagesState, StateGraph

    def respond(state: MessagesState) -> dict:
        return {"messages": [chat_model.invoke([SystemMessage(system), *state["messages"]])]}

    graph = StateGraph(MessagesState)
    graph.add_node("respond", respond)
    graph.add_edge(START, "respond")
    return graph.compile(checkpointer=InMemorySaver())


class PlainConversation:
    """The same buffer-memory conversation in plain Python: keep the messages, render them
    with the chat template, generate, append the reply."""

    def __init__(self, model, tokenizer, system: str = SYSTEM, max_new_tokens: int = 48):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.messages: list[dict] = [{"role": "system", "content": system}]

    def say(self, text: str) -> str:
        checks.instance("text", text, str)
        self.messages.append({"role": "user", "content": text})
        reply = chat_generate(self.model, self.tokenizer, [self.messages], max_new_tokens=self.max_new_tokens)[0][0]
        self.messages.append({"role": "assistant", "content": reply})
        return reply
