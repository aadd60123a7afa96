import pytest
import torch

from lit_featinv.sampling import join_prediction, renoise, sample_seed, split_prediction


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_prediction_types_round_trip(kind):
    torch.manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    abar = torch.tensor(0.3)
    z = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    output = {"epsilon": eps, "sample": x0, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0}[kind]
    eps_hat, x0_hat = split_prediction(output, z, abar, kind)
    torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(join_prediction(eps_hat, z, abar, kind), output, atol=1e-5, rtol=1e-5)


def test_unknown_prediction_type_is_an_error():
    with pytest.raises(ValueError, match="prediction_type"):
        split_prediction(torch.zeros(1), torch.zeros(1), torch.tensor(0.5), "flow")


def test_sample_seed_depends_on_seed_id_and_index_only():
    assert sample_seed(0, "a/b", 0) == sample_seed(0, "a/b", 0)
    assert len({sample_seed(0, "a", 0), sample_seed(1, "a", 0), sample_seed(0, "b", 0), sample_seed(0, "a", 1)}) == 4
    assert 0 <= sample_seed(123, "x", 7) < 2**63


def test_renoise_has_the_forward_process_variance():
    gens = [torch.Generator().manual_seed(0)]
    prev = torch.zeros(1, 1, 256, 256)
    out = renoise(prev, torch.tensor(0.5), torch.tensor(0.8), gens)
    assert abs(out.var().item() - (1 - 0.5 / 0.8)) < 0.01
