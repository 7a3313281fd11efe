"""Joint attacks: several modalities of one fusion model attacked by real toolkit attacks, composed.

Orchestrations (``JointAttack(..., orchestration=...)``):

* ``"sequential"``: each step attacks its modalities with the others held at their CURRENT adversarial
  state (step 2 sees step 1's adversarial image, not the clean one), in plan order or ``order=``;
* ``"alternating"``: ``rounds`` passes of the sequence (image given the current text, text given the
  current image, ...), as Co-Attack / SGA do for fixed vision-language models;

tensor modalities that share a recipe always run as ONE toolkit attack on a multi-modality surface
with per-modality budgets (gradient-joint; :func:`~mmfusion_attacks.joint.plan.build_steps`).

Budgets hold against the CLEAN example: a step starts its own modalities from their clean values (the
other modalities at their current state), so a modality attacked in every round is never more than its
budget away from the clean input, however many rounds run. A TextAttack query budget is for the whole
joint attack: with ``rounds=R`` each round's run gets its share (``budget // R``, the first
``budget % R`` rounds one more), so an example never costs more queries than the plan says.

With ``stop_at_success`` (default) an example leaves the attack at the first step that fools the model
(segmentation: an example is fooled when ``success_fraction`` of its valid pixels are wrong). Either
way each example keeps its best adversarial over the steps, not the last one: the first that fooled
the model (segmentation: the most fooled pixels), so the result is never less fooled than a step was.

Every step is :func:`~mmfusion_attacks.runner.run_attack` (or ``perturb_text`` for augmenters): the
frozen-modality guarantee, pairing and input checks of each toolkit's adapter apply inside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import InvariantViolationError
from ..fusion import FusionModel
from ..metrics import perturbation_norms, predicted_classes
from ..result import AdversarialBatch, CleanLogits, build_result, clean_pass, success_of
from ..runner import run_attack
from ..surface import frozen_model_state
from .plan import JointStep, ModalityAttack, build_steps

__all__ = ["JointAttack", "ORCHESTRATIONS"]

ORCHESTRATIONS = ("sequential", "alternating")


def _take(inputs: Mapping[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    idx = rows.tolist()
    return {k: (v[rows.to(v.device)] if isinstance(v, torch.Tensor) else [v[i] for i in idx]) for k, v in inputs.items()}


def _put(current: dict[str, Any], name: str, rows: torch.Tensor, values: Any) -> None:
    if isinstance(current[name], torch.Tensor):
        current[name][rows.to(current[name].device)] = values.to(current[name].device, current[name].dtype)
    else:
        for j, i in enumerate(rows.tolist()):
            current[name][i] = values[j]


class JointAttack:
    """Attack several modalities of ``fusion`` with the plan's toolkit attacks, composed.

    ``atk = JointAttack(fusion, [ModalityAttack("image", "pgd", 8/255), ModalityAttack("text", "deepwordbug", 200)])``
    then ``atk(inputs, labels)`` returns an :class:`AdversarialBatch` over every planned modality, with
    per example ``extras["succeeded_at"]`` (the label of the step whose output first fooled the model,
    ``"clean"`` when the clean input already was wrong, None when the final result is not fooled), ``extras["queries"]``
    (TextAttack queries) and ``norms`` measured against the clean input (tensors: ``linf`` / ``l2``;
    text: ``words_changed`` / ``fraction_changed``)."""

    def __init__(
        self,
        fusion: FusionModel,
        plan: Sequence[ModalityAttack],
        *,
        orchestration: str = "sequential",
        rounds: int = 1,
        order: Sequence[str] | None = None,
        stop_at_success: bool = True,
        success_fraction: float = 0.5,
    ) -> None:
        if not isinstance(fusion, FusionModel):
            raise TypeError(f"JointAttack needs a FusionModel, got {type(fusion).__name__}")
        if orchestration not in ORCHESTRATIONS:
            raise ValueError(f"orchestration must be one of {ORCHESTRATIONS}, got {orchestration!r}")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds must be a positive int, got {rounds!r}")
        if orchestration == "sequential" and rounds != 1:
            raise ValueError("rounds > 1 is the 'alternating' orchestration")
        if not (isinstance(success_fraction, (int, float)) and 0.0 < success_fraction <= 1.0):
            raise ValueError(f"success_fraction must be in (0, 1], got {success_fraction!r}")
        self.fusion = fusion
        self.plan = tuple(plan)
        self.orchestration = orchestration
        self.rounds = rounds
        self.stop_at_success = stop_at_success
        #: segmentation: the fraction of valid pixels that must be wrong for an example to count as fooled
        self.success_fraction = float(success_fraction)
        self.steps: list[JointStep] = build_steps(fusion, self.plan, order=order)
        #: per TextAttack step with a query budget: its share of that budget in each round
        self.query_shares: dict[int, list[int]] = {}
        for k, step in enumerate(self.steps):
            entry = step.entries[0]
            if step.kind == "text-attack" and entry.budget is not None:
                total = int(entry.budget)
                if total < rounds:
                    raise ValueError(
                        f"modality '{entry.modality}': a query budget of {total} cannot be split over {rounds} rounds "
                        f"(each round needs at least one query per example): give at least {rounds} queries or fewer rounds"
                    )
                self.query_shares[k] = [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]

    @property
    def attacked(self) -> tuple[str, ...]:
        return tuple(e.modality for e in self.plan)

    @property
    def name(self) -> str:
        inner = " -> ".join(s.label for s in self.steps)
        return f"{self.orchestration}[{inner}]" + (f" x{self.rounds}" if self.rounds > 1 else "")

    def __repr__(self) -> str:
        return f"JointAttack({self.name})"

    def __call__(self, inputs: Mapping[str, Any], labels: Any = None) -> AdversarialBatch:
        return self.run(inputs, labels)

    def run(
        self, inputs: Mapping[str, Any], labels: Any = None, *, clean_logits: CleanLogits | None = None, skip: torch.Tensor | None = None
    ) -> AdversarialBatch:
        """``clean_logits``: :func:`~mmfusion_attacks.result.clean_forward` of ``inputs`` when several attacks run
        on one batch (checked against it). ``skip``: per example, rows not to attack (left clean, their
        ``succeeded_at`` is ``"skipped"``): the worst case over subsets skips rows a smaller subset broke."""
        fusion = self.fusion
        clean = clean_pass(fusion, inputs, labels, clean_logits=clean_logits)
        n, clean_pred, used = clean.n, clean.clean_pred, clean.labels
        current: dict[str, Any] = {
            k: (v.detach().clone() if isinstance(v, torch.Tensor) else list(v)) for k, v in inputs.items()
        }
        best_score, success = self._scored(clean_pred, used)  # per example: the best adversarial so far (clean first)
        best = {m: (current[m].clone() if isinstance(current[m], torch.Tensor) else list(current[m])) for m in self.attacked}
        succeeded_at: list[str | None] = ["clean" if bool(s) else None for s in success]
        skipped = torch.zeros(n, dtype=torch.bool) if skip is None else torch.as_tensor(skip, dtype=torch.bool).cpu().reshape(-1)
        if len(skipped) != n:
            raise ValueError(f"skip must hold one flag per example ({n}), got {len(skipped)}")
        for i in (skipped & ~success).nonzero().flatten().tolist():
            succeeded_at[i] = "skipped"
        queries = torch.zeros(n, dtype=torch.long)
        flags: list[str] = []
        budget: dict[str, Any] = {e.modality: None for e in self.plan}
        for k, step in enumerate(self.steps):
            if k in self.query_shares:
                budget[step.modalities[0]] = ("queries", sum(self.query_shares[k]))  # per example, all rounds together
        for r in range(self.rounds):
            for k, step in enumerate(self.steps):
                rows = torch.arange(n)[~success & ~skipped] if self.stop_at_success else torch.arange(n)[~skipped]
                if len(rows) == 0:
                    break
                sub = _take(current, rows)
                for m in step.modalities:  # the step's own modalities start clean: its budget holds vs the clean input
                    sub[m] = _take({m: inputs[m]}, rows)[m]
                if k in self.query_shares:
                    step.attack.goal_function.query_budget = self.query_shares[k][r]
                result = self._run_step(step, sub, used[rows.to(used.device)])
                for m in step.modalities:
                    _put(current, m, rows, result.inputs[m])
                for name in sub:
                    if name not in step.modalities:
                        same = torch.equal(result.inputs[name], sub[name]) if isinstance(sub[name], torch.Tensor) else result.inputs[name] == sub[name]
                        if not same:
                            raise InvariantViolationError(f"step {step.label} changed '{name}', which it does not attack")
                for m in step.modalities:
                    if budget[m] is None and result.budget.get(m) is not None:
                        budget[m] = result.budget[m]  # (norm, eps) in the modality's units, as the driver read it
                if "queries" in result.extras:
                    queries[rows] += result.extras["queries"].cpu()
                flags.extend(f"{step.label}: {f}" for f in result.flags)
                # the step's prediction is of the whole current state of its rows (the others held at theirs)
                score, hit = self._scored(result.adv_pred, used[rows.to(used.device)])
                better = (score > best_score[rows]) | ((score == best_score[rows]) & ~success[rows])
                keep = rows[better]
                for m in self.attacked:  # a snapshot of every attacked modality: the state that scored
                    if isinstance(current[m], torch.Tensor):
                        best[m][keep.to(best[m].device)] = current[m][keep.to(current[m].device)]
                    else:
                        for i in keep.tolist():
                            best[m][i] = current[m][i]
                best_score[keep] = score[better]
                for j, i in enumerate(rows.tolist()):
                    if bool(hit[j]) and not bool(success[i]):
                        success[i] = True
                        succeeded_at[i] = step.label + (f" (round {r + 1})" if self.rounds > 1 else "")
        for m in self.attacked:
            current[m] = best[m]
        with frozen_model_state(fusion), torch.no_grad():
            adv_logits = fusion(current)
        adv_pred = predicted_classes(adv_logits)
        final = self._fooled(adv_pred, used)
        lost = [i for i in range(n) if succeeded_at[i] not in (None, "clean", "skipped") and not bool(final[i])]
        if lost:
            # the kept adversarial fooled the model when its step scored it: a model that changes between calls
            for i in lost:
                succeeded_at[i] = None
            flags.append(f"unstable: rows {lost[:10]} fooled by a step are not fooled by the final batch (a stochastic model?)")
        norms: dict[str, dict[str, torch.Tensor]] = {}
        n_words = torch.zeros(n, dtype=torch.long)
        for entry in self.plan:
            m = entry.modality
            if isinstance(inputs[m], torch.Tensor):
                norms[m] = perturbation_norms(inputs[m].detach(), current[m])
            else:
                from ..adapters.textattack import words_changed

                changed = torch.tensor([words_changed(a, b) for a, b in zip(inputs[m], current[m])], dtype=torch.long)
                import textattack

                words = torch.tensor([len(textattack.shared.AttackedText(t).words) for t in inputs[m]], dtype=torch.long)
                norms[m] = {"words_changed": changed, "fraction_changed": changed.float() / words.clamp_min(1).float()}
                n_words += words
        for name in inputs:
            if name not in self.attacked:
                same = torch.equal(current[name], inputs[name]) if isinstance(inputs[name], torch.Tensor) else current[name] == list(inputs[name])
                if not same:
                    raise InvariantViolationError(f"modality '{name}' is not attacked but changed")
        adversarial = {m: current[m] for m in self.attacked}
        return build_result(
            fusion,
            clean,
            inputs,
            adversarial,
            adv_pred,
            attacked=self.attacked,
            toolkit="joint",
            attack_name=self.name,
            batching="joint",
            norms=norms,
            budget=budget,
            flags=list(dict.fromkeys(flags)),
            extras={"succeeded_at": succeeded_at, "queries": queries, "words": n_words, "steps": [s.label for s in self.steps]},
            success_fraction=self.success_fraction,
        )

    def _fooled(self, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per example: wrong (classification) or wrong on ``success_fraction`` of its valid pixels."""
        return self._scored(pred, labels)[1]

    def _scored(self, pred: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example: the score (1/0; segmentation: the fraction of valid pixels wrong) and whether it fooled."""
        score, fooled = success_of(self.fusion.task, pred, labels, None, self.fusion.ignore_index, self.success_fraction)
        return score.detach().cpu().double(), fooled.cpu()

    def _run_step(self, step: JointStep, inputs: dict[str, Any], labels: torch.Tensor) -> AdversarialBatch:
        if step.kind == "text-augment":
            from ..adapters.textattack import perturb_text

            return perturb_text(step.attack, self.fusion, inputs, labels, text=step.modalities[0])
        if step.kind == "text-attack":
            import textattack

            textattack.shared.utils.set_seed(step.entries[0].seed)  # recipes draw random edits
        return run_attack(step.attack, inputs, labels, success_fraction=self.success_fraction)
