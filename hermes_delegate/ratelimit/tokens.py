"""A deployment's tpm: what a request will cost in tokens, and whether it fits now.

Mixed into CapacityGate (gate.py), whose state (state.py) it shares. A configured tpm is counted
over a minute's window (a minute's burst is allowed); a learned one (`Limits.token_bucket`) is paced
smoothly by a token bucket refilled at the rate the provider's own window allows. Estimates follow
what responses report (`used_tokens`): the prompt as our estimate turned out to run, plus max_tokens
or else the usual completion.
"""

from __future__ import annotations

from .state import DeploymentState, GateState
from .windows import Limits, TokenEstimate

__all__ = ["TokenBudget"]


class TokenBudget(GateState):
    """The tpm half of CapacityGate (see gate.py for the state)."""

    def _tpm_wait(self, dep_id: str, st: DeploymentState, lim: Limits, est: "float | TokenEstimate",
                  now: float) -> float:
        """Seconds until this request's tokens fit under the deployment's tpm (this process's own count)."""
        if lim.tpm is not None and lim.token_bucket:
            need = self._charge(st, est)
            rate, level = self._bucket(dep_id, lim.tpm, now, need)
            if level < need:
                return max(0.001, (need - level) / rate)
        elif lim.tpm is not None:
            span = lim.token_window_s
            while st.tokens and st.tokens[0][0] <= now - span:
                st.tokens.popleft()
            used = sum(t for _, t in st.tokens)
            if st.tokens and used + float(est) > lim.tpm * span / 60.0:
                return max(0.001, st.tokens[0][0] + span - now)
        return 0.0

    def _take_tokens(self, dep_id: str, st: DeploymentState, lim: Limits, est: "float | TokenEstimate",
                     now: float) -> None:
        """The request was admitted: count its tokens."""
        if lim.tpm is not None and lim.token_bucket:
            need = self._charge(st, est)
            st.bucket = self._bucket(dep_id, lim.tpm, now, need)[1] - need
            st.bucket_at = now
        elif lim.tpm is not None:
            st.tokens.append((self.clock(), float(est)))

    def _tpm_ask(self, dep_id: str, st: DeploymentState, lim: Limits, est: "float | TokenEstimate",
                 now: float) -> tuple[float, tuple[float, float] | None, tuple[float, float] | None]:
        """(tokens, tpm window (tokens, per seconds), tpm bucket (tokens per second, capacity)) to ask
        a shared store for."""
        if lim.tpm is not None and lim.token_bucket:
            amount = self._charge(st, est)
            return amount, None, (self._bucket(dep_id, lim.tpm, now, amount)[0], amount)
        if lim.tpm is not None:
            return float(est), (lim.tpm * lim.token_window_s / 60.0, lim.token_window_s), None
        return 0.0, None, None

    def _bucket(self, dep_id: str, tpm: float, now: float, need: float) -> tuple[float, float]:
        """(refill rate in tokens/s; tokens in hand now) of a learned tpm's bucket for a request of
        `need` tokens. The provider counts tokens over a window W (learned from its token resets): a
        pace r lets r·W + one request into any window, so r = tpm/60 − need/W keeps it at the limit,
        and the bucket holds one request's worth (a second's worth would let two seconds' worth in
        after an idle spell). The jitter margin slows it as it does rpm windows."""
        st = self._state[dep_id]
        ad = self.adaptive.get(dep_id)
        per_s = tpm / 60.0
        window_s = ad.token_window_s if ad is not None else 1.0
        rate = max(per_s / 2.0, per_s - need / window_s) / (1.0 + self._pad(dep_id))
        return rate, min(need, st.bucket + (now - st.bucket_at) * rate)

    @staticmethod
    def _charge(st: DeploymentState, est: "float | TokenEstimate") -> float:
        """What the provider will count for a request: its prompt as responses showed our estimate to
        run, plus its max_tokens (providers count the cap at admission), else the usual completion."""
        if not isinstance(est, TokenEstimate):
            return float(est)
        return est.prompt * st.token_ratio + (est.max_tokens if est.max_tokens else st.completion_avg)

    def used_tokens(self, dep_id: str, est: "float | TokenEstimate", prompt: float, completion: float) -> None:
        """A response reported its token counts: estimates for this deployment follow them."""
        st = self._state[dep_id]
        ad = self.adaptive.get(dep_id)
        if ad is not None and ad.on_tokens(self.clock(), prompt + completion):  # more than the learned tpm
            self._apply_learned(dep_id, ad)
        if isinstance(est, TokenEstimate) and est.prompt > 0 and prompt > 0:
            st.token_ratio = min(10.0, max(0.1, 0.7 * st.token_ratio + 0.3 * prompt / est.prompt))
            if not est.max_tokens:
                st.completion_avg = 0.7 * st.completion_avg + 0.3 * completion if st.completion_avg else completion
