"""CDPruner: keep the visual tokens a conditional DPP over instruction relevance and feature similarity selects."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.core import PruneBenchError, Selection, UnsupportedModel, VisionStagePruner
from prunebench.registry import register_method
from prunebench.views import VisionView, unit_quotas

CLIP_MODEL = "openai/clip-vit-large-patch14-336"
CLIP_CONTEXT = 77
# the answer-format instructions the authors' loaders strip before encoding the question (LLaVA eval prompts)
INSTRUCTION_SUFFIXES = (
    "\nAnswer the question using a single word or phrase.",
    "\nAnswer with the option's letter from the given choices directly.",
)
TEXT_ENCODERS = ("auto", "clip", "llm")
SIGNS = ("auto", "negative", "positive")


def greedy_map(kernel: torch.Tensor, k: int, eps: float = 1e-10) -> torch.Tensor:
    """Fast greedy MAP inference of a DPP (Chen et al., NeurIPS 2018), batched: (B, N, N) kernel -> (B, k) indices
    in original order.

    Each step picks the item with the largest remaining marginal gain d_j² (first index on ties) and updates
    every item's gain with one Cholesky row: e = (L[j] - Σ_t c_t[j]·c_t) / d_j, d² -= e². k tensor steps, each
    over the whole batch; no per-item loop. Guard (the original has none and yields NaN): once the largest gain
    is <= ``eps`` (the kernel's rank is exhausted, e.g. exact duplicates), the Cholesky row is zero and the rest
    are picked by their remaining gain.
    """
    bsz, n, _ = kernel.shape
    rows = torch.arange(bsz, device=kernel.device)
    chol = kernel.new_zeros(bsz, k, n)
    gain = kernel.diagonal(dim1=1, dim2=2).clone()
    chosen = torch.empty(bsz, k, dtype=torch.long, device=kernel.device)
    for t in range(k):
        j = gain.argmax(dim=1)
        chosen[:, t] = j
        dj = gain[rows, j]
        projected = torch.einsum("bt,btn->bn", chol[rows, :t, j], chol[:, :t])
        e = (kernel[rows, j] - projected) / dj.clamp(min=eps).sqrt()[:, None]
        e = torch.where((dj > eps)[:, None], e, torch.zeros_like(e))
        chol[:, t] = e
        gain = gain - e.square()
        gain[rows, j] = float("-inf")
    return chosen.sort(dim=1).values


def min_max(relevance: torch.Tensor) -> torch.Tensor:
    """The authors' normalisation, per sample over all its tokens: (r - min + 1e-6) / (max - min); a constant
    row (no information) gives 1 everywhere, i.e. a pure similarity DPP."""
    low = relevance.min(dim=1, keepdim=True).values
    span = relevance.max(dim=1, keepdim=True).values - low
    return torch.where(span > 0, (relevance - low + 1e-6) / span.clamp(min=torch.finfo(relevance.dtype).tiny), torch.ones_like(relevance))


@register_method("cdpruner")
@dataclass
class CDPruner(VisionStagePruner):
    """CDPruner (Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for Token Pruning
    in MLLMs", NeurIPS 2025, arXiv 2506.10967; code github.com/Theia-4869/CDPruner @ 9541616, with the fix of
    58190f6; ``llava/model/llava_arch.py`` ``encode_images``), training-free, after the projector.

    Algorithm (as the code does it):
      1. similarity: S = cos(X_i, X_j) of the projector outputs X (fp32);
      2. relevance: r_i = mean over the instruction's text vectors of sign·cos(E_i, T), E the image-side and T
         the text-side embeddings in one space; min-max normalised per sample, r = (r - min + 1e-6)/(max - min);
      3. conditional kernel L = diag(r) S diag(r); keep the ``keep`` tokens fast greedy MAP inference picks
         (:func:`greedy_map`), in original order; the LLM sees a compact sequence.
    The paper's θ-weighted kernel diag(exp(α r)) S diag(exp(α r)) is commented out in the code (their issue #20),
    so there is no θ knob; the shipped kernel above is what ran.

    Text side (``text_encoder``):
      * ``"clip"`` (the original): E = CLIP ``visual_projection(post_layernorm(.))`` of the ViT feature-layer
        patch states, T = the CLIP text tower's projected embedding of the question, tokenized without
        truncation and cut into 77-token chunks (last zero-padded), one vector per chunk, both from
        ``clip_model`` (``openai/clip-vit-large-patch14-336``, ~430 M parameters, which llava-hf checkpoints do
        not ship: loaded with ``CLIPModel.from_pretrained``, so it must be in the local cache offline). The
        relevance sign is **negative** as in the code (their issues #9/#14: the penultimate-layer patch states
        through the CLIP head are anti-aligned with the text). Defined for CLIP ViT-L/14-336 towers
        (LLaVA-1.5, LLaVA-NeXT); other towers refuse;
      * ``"llm"`` (the substitute where no text tower exists: Qwen2.5-VL, Video-LLaVA, the tiny and toy models):
        T = the mean of the LLM's own input embeddings of the question tokens (``VisionView.instruction_embedding``),
        E = the projector outputs (the LLM's input space); relevance sign **positive** (tokens close to the
        instruction are relevant; the negative sign is a property of CLIP's penultimate layer);
      * ``"auto"`` (default): ``clip`` on a CLIP ViT-L/14-336 tower with 24 layers (real LLaVA-1.5/NeXT
        checkpoints), ``llm`` elsewhere. ``relevance_sign`` overrides the sign.
    The question is the sample's question without the chat template, with the LLaVA eval answer-format suffixes
    stripped as the authors' loaders do (``strip_suffixes``).

    Multi-unit inputs: LLaVA-NeXT crops are pruned per crop (``unit_quotas``: the budget split evenly, as
    "T per crop") with the relevance normalised jointly over the image's crops, as the code does; the DPP runs
    per crop. The authors drop the unpadding and newlines on NeXT: that is prunebench's ``--layout fivecrop``
    (with ``--budget-scope crop``); on the stock layout the newlines stay outside the budget. Video frames
    (no author code): one DPP per frame, relevance normalised over the video. Qwen2.5-VL (no author code; their
    issue #4: prune after the merger): the merger outputs are X and E, the ``llm`` text side; M-RoPE positions
    of kept tokens are kept.

    Deviations: relevance min-max per sample (the code normalises over the whole batch tensor; their loader runs
    batch size 1, where the two agree); the greedy MAP's rank-exhaustion guard (:func:`greedy_map`).
    """

    text_encoder: str = "auto"
    relevance_sign: str = "auto"
    clip_model: str = CLIP_MODEL
    strip_suffixes: bool = True

    signals = ("projector outputs (cosine similarity)", "instruction text embedding (CLIP text tower, or the LLM's input embeddings)")
    paper = "Zhang et al., NeurIPS 2025 (arXiv 2506.10967)"
    citation = "zhang2025cdpruner"

    def __post_init__(self) -> None:
        if self.text_encoder not in TEXT_ENCODERS:
            raise PruneBenchError(f"cdpruner text_encoder must be one of {TEXT_ENCODERS}, got {self.text_encoder!r}")
        if self.relevance_sign not in SIGNS:
            raise PruneBenchError(f"cdpruner relevance_sign must be one of {SIGNS}, got {self.relevance_sign!r}")

    # -- signals ------------------------------------------------------------------------------------------
    def encoder_for(self, view: VisionView) -> str:
        """``clip`` or ``llm`` for this view (``auto``: clip on a 24-layer CLIP ViT-L/14-336 tower)."""
        if self.text_encoder != "auto":
            return self.text_encoder
        adapter = view.adapter
        vision = getattr(getattr(getattr(adapter, "model", None), "config", None), "vision_config", None)
        is_clip_l336 = getattr(vision, "model_type", "") in ("clip_vision_model", "clip") and (
            vision.hidden_size,
            vision.image_size,
            vision.patch_size,
            vision.num_hidden_layers,
        ) == (1024, 336, 14, 24)
        return "clip" if is_clip_l336 and view.has_cls else "llm"

    def questions(self, view: VisionView) -> list[str]:
        if view.instruction is None:
            raise PruneBenchError("cdpruner needs each sample's instruction; this VisionView carries none (build it with instruction=...)")
        texts = list(view.instruction.texts)
        if self.strip_suffixes:
            for suffix in INSTRUCTION_SUFFIXES:
                texts = [t.replace(suffix, "") for t in texts]
        return [t.strip() for t in texts]

    def relevance(self, view: VisionView) -> torch.Tensor:
        """(B, N) normalised relevance of each candidate to its sample's instruction."""
        encoder = self.encoder_for(view)
        negative = self.relevance_sign == "negative" or (self.relevance_sign == "auto" and encoder == "clip")
        texts = self.questions(view)
        if encoder == "llm":
            image = F.normalize(view.projected.float(), dim=-1)
            text = F.normalize(view.instruction.embedding(texts).to(image.device), dim=-1)  # (B, D)
            # an elementwise product summed per row, not a batched matmul: the same bits alone and in a batch
            cosine = (image * text[:, None, :]).sum(-1)
        else:
            image, text, valid = self._clip_embeddings(view, texts)  # (B, N, D), (B, M, D), (B, M)
            per_chunk = (F.normalize(image, dim=-1)[:, :, None, :] * F.normalize(text, dim=-1)[:, None, :, :]).sum(-1)
            cosine = (per_chunk * valid[:, None]).sum(-1) / valid.sum(-1, keepdim=True)
        return min_max(-cosine if negative else cosine)

    def use_clip(self, model: torch.nn.Module, tokenizer) -> CDPruner:
        """Use an in-memory ``CLIPModel`` and its tokenizer for ``text_encoder="clip"`` (tests, custom paths)."""
        self.__dict__["_clip_pair"] = (model.eval(), tokenizer)
        return self

    def _clip(self):
        if "_clip_pair" not in self.__dict__:
            from transformers import AutoTokenizer, CLIPModel

            try:
                model = CLIPModel.from_pretrained(self.clip_model, use_safetensors=True)
                tokenizer = AutoTokenizer.from_pretrained(self.clip_model)
            except OSError as exc:
                raise PruneBenchError(
                    f"cdpruner text_encoder='clip' loads the CLIP text tower and visual projection of {self.clip_model!r} and "
                    f"could not ({exc.__class__.__name__}); download it into the Hugging Face cache, set clip_model=PATH, or use "
                    "text_encoder=llm (the LLM's own embedding of the question)"
                ) from None
            self.__dict__["_clip_pair"] = (model.eval(), tokenizer)
        return self.__dict__["_clip_pair"]

    def _clip_embeddings(self, view: VisionView, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not view.has_cls:
            raise UnsupportedModel("cdpruner text_encoder='clip' needs a CLIP ViT-L/14-336 tower (LLaVA-1.5/NeXT); use text_encoder=llm")
        model, tokenizer = self._clip()
        device = view.features.device
        model = model.to(device)
        vision = model.vision_model
        if view.features.shape[-1] != vision.config.hidden_size:
            raise UnsupportedModel(
                f"cdpruner text_encoder='clip': {view.features.shape[-1]}-d ViT features, but {self.clip_model} "
                f"projects {vision.config.hidden_size}-d ones; use text_encoder=llm"
            )
        with torch.inference_mode():
            image = model.visual_projection(vision.post_layernorm(view.features.to(model.dtype))).float()
            per_sample = []
            for text in texts:  # one sample at a time: a sample's vectors never depend on its batch-mates
                ids = torch.tensor(tokenizer(text, truncation=False)["input_ids"], device=device)
                chunks = -(-ids.numel() // CLIP_CONTEXT)
                padded = torch.zeros(chunks * CLIP_CONTEXT, dtype=torch.long, device=device)
                padded[: ids.numel()] = ids
                features = model.get_text_features(input_ids=padded.view(chunks, CLIP_CONTEXT))
                per_sample.append(getattr(features, "pooler_output", features).float())  # transformers 5: an output object
        most = max(t.shape[0] for t in per_sample)
        text = torch.zeros(len(texts), most, per_sample[0].shape[-1], device=device)
        valid = torch.zeros(len(texts), most, device=device)
        for b, t in enumerate(per_sample):
            text[b, : t.shape[0]], valid[b, : t.shape[0]] = t, 1.0
        return image, text, valid

    # -- selection ----------------------------------------------------------------------------------------
    def select_vision(self, view: VisionView, keep: int) -> Selection:
        features = F.normalize(view.projected.float(), dim=-1)
        relevance = self.relevance(view)
        quotas = unit_quotas(view, keep)
        if quotas is None:
            return Selection(self._dpp(features, relevance, keep))
        picked = []
        for unit, quota in enumerate(quotas):
            members = (view.unit_of[0] == unit).nonzero().squeeze(1)
            if quota:
                local = self._dpp(features[:, members], relevance[:, members], quota)
                picked.append(members[local])
        return Selection(torch.cat(picked, dim=1).sort(dim=1).values)

    @staticmethod
    def _dpp(features: torch.Tensor, relevance: torch.Tensor, keep: int) -> torch.Tensor:
        similarity = features @ features.transpose(1, 2)
        kernel = relevance[:, :, None] * similarity * relevance[:, None, :]
        return greedy_map(kernel, keep)
