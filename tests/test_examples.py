"""Every example in a public docstring runs and shows what it says (doctest, module by module)."""

import doctest
import importlib
import pkgutil

import pytest
import torch

import imwm

MODULES = sorted(info.name for info in pkgutil.walk_packages(imwm.__path__, "imwm."))


def test_the_package_has_modules_to_check():
    assert len(MODULES) > 100 and "imwm.errors" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, extraglobs={"torch": torch})
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see the output above)"
