"""Transformer Programs page: load or train a program, read it as Python, see its heads fire.

A program is either the trained one (cached, else shipped with the package) or one trained
here in a background thread: the page polls its progress every second and a Stop button
ends it, keeping the best program seen so far (``fit_program``'s ``should_stop``). The
decompiled module is shown as code; an input is run through it and each head's
query x key grid shows where its predicate matched and which key it chose, beside the
attention pattern of the same head in the ``program:<task>`` TransformerLens model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import streamlit as st
import torch

from analysis.attention import run_attention
from analysis.figures import attention_pattern_figure
from analysis.figures.programs import head_trace_figure
from models import LoadedModel
from models.program_tasks import PROGRAM_TASKS, program_task
from models.programs import (
    find_program,
    program_dir,
    program_loaded_model,
    read_program,
    read_test_set,
    save_program,
)
from rasp.programs import FittedProgram, ProgramModel, ProgramVocab, fit_program
from rasp.programs.decompile import decompile_program
from rasp.programs.discrete import DiscreteProgram, discretise
from rasp.programs.trace import trace_program

STORED, TRAIN = "trained program", "train one now"
_JOBS_KEY = "programs.jobs"


@dataclass
class TrainingJob:
    """A ``fit_program`` run in a background thread; the page polls ``progress``."""

    task: str
    epochs: int
    seed: int
    examples: int = 20_000
    device: str = "cpu"
    stop: threading.Event = field(default_factory=threading.Event)
    progress: tuple[int, int, float, float] = (0, 1, float("nan"), float("nan"))
    result: FittedProgram | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        """Launch the fit in a daemon thread."""
        task = program_task(self.task)
        config = task.fit_config(epochs=self.epochs, seed=self.seed, dataset_size=self.examples)

        def work() -> None:
            try:
                self.result = fit_program(
                    task,
                    config,
                    progress=False,
                    callback=self._update,
                    should_stop=self.stop.is_set,
                    device=self.device,
                )
            except BaseException as exc:  # shown on the page, never a traceback
                self.error = exc

        self.thread = threading.Thread(target=work, daemon=True, name=f"fit-{self.task}")
        self.thread.start()

    def _update(self, step: int, total: int, loss: float, tau: float) -> None:
        self.progress = (step, total, loss, tau)

    @property
    def running(self) -> bool:
        """Whether the fit is still going."""
        return self.thread is not None and self.thread.is_alive()


@st.cache_resource(show_spinner="Reading the trained program…", max_entries=8)
def stored_program(name: str) -> tuple[ProgramModel, ProgramVocab, dict, list]:
    """The cached or shipped program of a task, its record and its test inputs."""
    folder = find_program(name, train_missing=False)
    stored = read_program(folder)
    return stored.model, stored.vocab, stored.meta, read_test_set(folder)


@st.cache_resource(show_spinner="Building the program's transformer…", max_entries=8)
def program_transformer(
    name: str, _model: ProgramModel, _vocab: ProgramVocab, key: str
) -> LoadedModel:
    """The TransformerLens model of a program (``key`` identifies the program)."""
    del key
    return program_loaded_model(_model, _vocab, name)


def render(model: LoadedModel) -> None:
    """Draw the page (it loads its own programs; the sidebar model picks the first task)."""
    st.header("Transformer Programs")
    st.caption(
        "Friedman, Wettig & Chen (2023): a transformer constrained to discrete, named "
        "variables, trained with Gumbel-softmax, then read off as a Python program that "
        "computes exactly what the network computes."
    )
    names = list(PROGRAM_TASKS)
    first = model.spec.name if model.kind == "program" and model.spec.name in names else "sort"
    name = st.selectbox("Task", names, index=names.index(first), key="programs.task")
    task = program_task(name)
    st.markdown(
        f"**{name}**: {task.description}. Inputs: `{' '.join(map(str, task.input_values))}`, "
        f"up to {task.max_len} tokens"
    )
    source = st.radio("Program", [STORED, TRAIN], horizontal=True, key="programs.source")
    if source == TRAIN:
        got = _train_panel(name)
        if got is None:
            return
        prog_model, vocab, metrics, tests, key = got
        meta = {"metrics": metrics}
    else:
        prog_model, vocab, meta, tests = stored_program(name)
        key = f"stored:{name}:{meta.get('metrics', {}).get('test_acc')}"
    program = discretise(prog_model, vocab)
    code = decompile_program(program, name)
    _summary(task, program, meta, code)
    st.subheader("The program")
    st.code(code, language="python", line_numbers=True, height=420)
    st.download_button(
        "Download as .py", code, file_name=f"{name}_program.py", key=f"programs.dl.{key}"
    )
    _run_panel(name, program, code, prog_model, vocab, tests, key)


def _summary(task, program: DiscreteProgram, meta: dict, code: str) -> None:
    metrics = meta.get("metrics", {})
    cols = st.columns(5)
    acc = metrics.get("test_acc")
    cols[0].metric("test accuracy", "?" if acc is None else f"{100 * acc:.2f}%")
    cols[1].metric("paper (Table 1)", "—" if task.paper_acc is None else f"{task.paper_acc:.2f}%")
    cols[2].metric("layers", program.n_layers())
    cols[3].metric("heads / MLPs", f"{len(program.heads)} / {len(program.mlps)}")
    cols[4].metric("lines of code", len(code.splitlines()))
    if meta.get("trained_seconds"):
        st.caption(
            f"Trained for {meta.get('fit', {}).get('epochs', '?')} epochs in "
            f"{meta['trained_seconds']:.0f} s on {meta.get('machine', 'a CPU')}."
        )


def _train_panel(name: str):
    jobs: dict[str, TrainingJob] = st.session_state.setdefault(_JOBS_KEY, {})
    gpu = torch.cuda.is_available()
    c1, c2, c3, *c_device, c4 = st.columns(5 if gpu else 4)
    epochs = int(c1.number_input("Epochs", 1, 500, value=10, key="programs.epochs"))
    examples = int(
        c2.number_input("Examples", 100, 20_000, value=20_000, step=1000, key="programs.examples")
    )
    shipped_seed = program_task(name).fit_config().seed
    seed = int(c3.number_input("Seed", 0, 10_000, value=shipped_seed, key=f"programs.seed.{name}"))
    device = (
        c_device[0].selectbox("Device", ["cuda", "cpu"], key="programs.device") if gpu else "cpu"
    )
    job = jobs.get(name)
    if c4.button("Train", key="programs.train", disabled=bool(job and job.running)):
        job = jobs[name] = TrainingJob(name, epochs, seed, examples, device)
        job.start()
    if job is None:
        st.info("Pick the epochs and seed, then Train (the authors use 250 epochs).")
        return None
    if job.running:
        _progress_fragment(name)
        return None
    if job.error is not None:
        raise job.error
    fitted = job.result
    assert fitted is not None
    m = fitted.metrics
    note = " (stopped early: best program so far)" if m["interrupted"] else ""
    st.success(f"Trained {m['steps']}/{m['total_steps']} steps in {m['seconds']:.0f} s{note}.")
    if st.button(f"Save as program:{name}", key="programs.save"):
        folder = save_program(program_dir(name), fitted, trained_seconds=m["seconds"])
        stored_program.clear()
        st.success(f"Saved to {folder}; `program:{name}` now loads it.")
    tests = [list(s) for s in fitted.data.test.sequences] if fitted.data else []
    key = f"trained:{name}:{id(fitted)}"
    return fitted.model, fitted.vocab, m, tests, key


@st.fragment(run_every=1.0)
def _progress_fragment(name: str) -> None:
    job: TrainingJob = st.session_state[_JOBS_KEY][name]
    step, total, loss, tau = job.progress
    st.progress(
        min(step / max(total, 1), 1.0), text=f"step {step}/{total} · loss {loss:.3f} · τ {tau:.3f}"
    )
    if st.button("Stop (keep the best program so far)", key="programs.stop"):
        job.stop.set()
    if not job.running:
        st.rerun()


def _parse(text: str, vocab: ProgramVocab) -> list:
    by_text = {str(v): v for v in vocab.input_values}
    values = []
    for item in text.split():
        if item not in by_text:
            from rasp.errors import ProgramDataError

            raise ProgramDataError(
                f"token {item!r} is not an input of this program; valid: "
                f"{', '.join(map(str, vocab.input_values))}"
            )
        values.append(by_text[item])
    return values


def _run_panel(name, program, code, prog_model, vocab, tests, key) -> None:
    st.subheader("Run it")
    default = " ".join(map(str, tests[0])) if tests else ""
    text = st.text_input("Input (space separated)", value=default, key=f"programs.input.{name}")
    seq = _parse(text, vocab)
    trace = trace_program(program, seq, source=code)
    task = program_task(name)
    target = task.target(seq) if seq else []
    st.dataframe(
        {"input": [str(v) for v in seq], "program": [str(v) for v in trace.outputs],
         "target": ["" if t is None else str(t) for t in target]},
        width="stretch",
    )  # fmt: skip
    if not trace.heads:
        return
    st.subheader("Which head fired where")
    head = st.selectbox("Head", list(trace.heads), key=f"programs.head.{name}")
    ht = trace.heads[head]
    rule = ", ".join(f"{q}→{k}" for q, k in ht.rule.items())
    st.markdown(
        f"`{head}` reads queries from **{ht.q_var}**, keys from **{ht.k_var}**"
        + (f", copies **{ht.v_var}**" if ht.v_var else ", counts matches")
        + f". Predicate on the query values seen (query {ht.q_var} → key {ht.k_var}): {rule}"
    )
    left, right = st.columns(2)
    left.plotly_chart(head_trace_figure(ht), width="stretch", key=f"programs.trace.{key}.{head}")
    lm = program_transformer(name, prog_model, vocab, key)
    where = [n for n, role in (lm.head_roles or {}).items() if role.split(":")[0] == head]
    if where:
        layer, h = (int(x) for x in where[0][1:].split("H"))
        attention = run_attention(lm, seq, layers=[layer])
        right.plotly_chart(attention_pattern_figure(attention, layer, h), width="stretch",
                           key=f"programs.attn.{key}.{head}")  # fmt: skip
        right.caption(
            f"The same head as {where[0]} of `program:{name}` (TransformerLens): hard attention "
            "on the chosen key; a counting head spreads over BOS and the matches (BOS's share "
            "is 1/(1+count))."
        )
