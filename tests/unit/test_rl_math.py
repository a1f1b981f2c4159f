"""Online-RL arithmetic, each checked against numbers computed by hand (in the comments)."""

import math

import pytest
import torch

from tunesmith.objectives.rl.advantages import gae, group_advantages, rloo_advantages, whiten, zero_std_groups
from tunesmith.objectives.rl.kl import AdaptiveKLController, kl_per_token
from tunesmith.objectives.rl.losses import aggregate, clipped_surrogate, clipped_value_loss, loss_units

R = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], dtype=torch.float64)


def test_group_advantages_each_scale():
    # group 1: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = 0.57735; group 2: all 2, std 0
    centred = [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    assert group_advantages(R, 4, "none").tolist() == centred
    g = group_advantages(R, 4, "group")
    s = math.sqrt(1 / 3) + 1e-4
    assert g.tolist() == pytest.approx([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0])
    # batch: mean 1.25, squared deviations sum 5.5, /7 -> std 0.886405
    b = group_advantages(R, 4, "batch")
    assert b.tolist() == pytest.approx([c / (math.sqrt(5.5 / 7) + 1e-4) for c in centred])
    assert zero_std_groups(R, 4).tolist() == [False, True]
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(R, 4, "rank")
    with pytest.raises(ValueError):
        group_advantages(R, 3)


def test_rloo_leave_one_out():
    # A_0 = 1 - (0 + 0 + 1) / 3 = 2/3; A_1 = 0 - (1 + 0 + 1) / 3 = -2/3; constant group -> 0
    assert rloo_advantages(R, 4).tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0])


def test_loss_type_aggregation():
    per = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    # grpo: 6/3 + 4/1 = 6 over 2 completions; dr_grpo: (6 + 4) / 4 over 2; dapo: 10 over 4 tokens
    assert aggregate(per, mask, "grpo", 4).item() == 6.0 and loss_units(mask, "grpo") == 2
    assert aggregate(per, mask, "dr_grpo", 4).item() == 2.5 and loss_units(mask, "dr_grpo") == 2
    assert aggregate(per, mask, "dapo", 4).item() == 10.0 and loss_units(mask, "dapo") == 4
    with pytest.raises(ValueError):
        aggregate(per, mask, "sum", 4)


def test_clipped_surrogate_by_hand():
    lp = torch.log(torch.tensor([1.6487212707, 1.6487212707, 0.5, 0.5, 1.25]))
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    loss, clipped = clipped_surrogate(lp, torch.zeros(5), adv, 0.2, 0.28)
    # r=1.6487, A=1: min(1.6487, 1 + 0.28) -> -1.28 (clipped); A=-1: min(-1.6487, -1.2) -> 1.6487
    # r=0.5, A=1: min(0.5, 0.8) -> -0.5; A=-1: min(-0.5, -0.8) -> 0.8 (clipped); r=1.25 < 1.28: -1.25
    assert loss.tolist() == pytest.approx([-1.28, 1.6487212707, -0.5, 0.8, -1.25])
    assert clipped.tolist() == [True, False, False, True, False]


def test_first_iteration_ratio_one_gradient_is_reinforce():
    torch.manual_seed(0)
    theta = torch.randn(5, 7, requires_grad=True)
    tokens = torch.randint(0, 7, (5,))
    adv = torch.tensor([0.3, -1.2, 0.7, 0.0, 2.0])

    def logps():
        return theta.log_softmax(-1).gather(1, tokens[:, None]).squeeze(1)

    lp = logps()
    loss, clipped = clipped_surrogate(lp, lp.detach(), adv, 0.2, 0.2)
    assert torch.exp(lp - lp.detach()).tolist() == [1.0] * 5 and not clipped.any()
    (g_ppo,) = torch.autograd.grad(loss.sum(), theta)
    (g_pg,) = torch.autograd.grad(-(adv * logps()).sum(), theta)
    assert torch.allclose(g_ppo, g_pg, atol=1e-7) and g_pg.abs().sum() > 0
    # the loss value itself is -sum(A): ~0 for centred advantages, whatever the gradient
    assert loss.sum().item() == pytest.approx(-adv.sum().item())


def test_k1_k3_against_exact_kl():
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    exact = (p * (p / q).log()).sum().item()  # 0.5 ln2.5 + 0.2 ln0.4 = 0.27489
    assert exact == pytest.approx(0.5 * math.log(2.5) + 0.2 * math.log(0.4))
    lp, lq = p.log(), q.log()
    for est in ("k1", "k3"):  # both are unbiased: their expectation under p is the KL
        assert (p * kl_per_token(lp, lq, est)).sum().item() == pytest.approx(exact, abs=1e-12)
    assert (kl_per_token(lp, lq, "k3") >= 0).all() and (kl_per_token(lp, lq, "k1") < 0).any()
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(p, 200_000, replacement=True, generator=g)
    assert kl_per_token(lp[idx], lq[idx], "k3").mean().item() == pytest.approx(exact, abs=0.01)
    with pytest.raises(ValueError):
        kl_per_token(lp, lq, "k2")


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # row 0: d2 = 1 - 0.7 = 0.3; d1 = 0.9*0.7 - 0.6 = 0.03; d0 = 0.9*0.6 - 0.5 = 0.04
    #        A2 = 0.3; A1 = 0.03 + 0.45*0.3 = 0.165; A0 = 0.04 + 0.45*0.165 = 0.11425
    # row 1 ends after 2 tokens: d1 = 1 - 0.6 = 0.4; d0 = 0.54 - 0.5 = 0.04; A0 = 0.04 + 0.45*0.4 = 0.22
    assert adv.flatten().tolist() == pytest.approx([0.11425, 0.165, 0.3, 0.22, 0.4, 0.0])
    assert ret.flatten().tolist() == pytest.approx([0.61425, 0.765, 1.0, 0.72, 1.0, 0.0])


def test_value_loss_whiten_and_adaptive_kl():
    loss, clipped = clipped_value_loss(torch.tensor([1.0, 0.6]), torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.9]), 0.2)
    # V=1.0 clipped to 0.7: max(0.1^2, 0.2^2)/2 = 0.02; V=0.6 within the clip: 0.3^2/2 = 0.045
    assert loss.tolist() == pytest.approx([0.02, 0.045]) and clipped.tolist() == [True, False]
    w = whiten(torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([1, 1, 1, 0]))
    assert w.tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(12.0, 100)  # error clip(12/6 - 1) = 0.2: beta * (1 + 0.2 * 100 / 10000)
    assert c.beta == pytest.approx(0.1002)
    c2 = AdaptiveKLController(0.5, None, 10)
    c2.load_state_dict(c.state_dict())
    assert c2.beta == c.beta
    fixed = AdaptiveKLController(0.1, None, 10)
    fixed.update(100.0, 10)
    assert fixed.beta == 0.1
