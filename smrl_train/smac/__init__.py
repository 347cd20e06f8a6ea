"""SMAC (Pong et al., ICML 2022): offline meta-training, reward-free self-supervision, meta-test.

Modules, in the order data flows through them:

* :mod:`.config`      the ``smac:`` section of a config (networks, phases, evaluation, variant);
* :mod:`.networks`    context encoders (product of Gaussians, linear-Gaussian, deep sets),
                      tanh-Gaussian policy, fused twin Q, V, reward decoder, each with its input
                      normalisation baked in;
* :mod:`.losses`      every loss of the update as a small pure function;
* :mod:`.buffers`     per-task replay storage and the meta-batch sampler;
* :mod:`.step`        the definition of one update: every loss from networks, batch and noise;
* :mod:`.trainer`     ``SmacTrainer.update(batch) -> dict[str, float]`` with the configured
                      gradient path (and meta-BC);
* :mod:`.manual_grad` the opt-in hand-derived gradients of the same update;
* :mod:`.agent`       the adapting agent (prior-z exploration, posterior-z acting);
* :mod:`.sources`     where reward-free online episodes come from (gym env, episode store,
                      the exploration node's recordings);
* :mod:`.evaluation`  the meta-test protocol and the offline-vs-exploration z diagnostic;
* :mod:`.diagnose`    ``smrl diagnose``: probe error on z, trilateration bound, success by context;
* :mod:`.runner`      the offline and self-supervised phases, top to bottom;
* :mod:`.checkpoint`  safetensors checkpoints, atomic, resumable, pickle-free;
* :mod:`.report`      markdown + PNG + summary.json across methods and seeds;
* :mod:`.cli`         ``smrl train|eval|diagnose|report|experiment`` sub-commands.

The algorithm itself and every deviation from the paper are described in ``docs/algorithm.md``.
"""
