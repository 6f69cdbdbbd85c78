import pytest


@pytest.fixture
def one_torch_thread():
    """Tiny problems: torch's OpenMP threads only spin against each other on a shared machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
