import pytest

from nakama.errors import InvalidInput
from nakama.names import name_problem, validate_project_name


@pytest.mark.parametrize("name", ["a", "sales-dashboard", "app1", "a" * 40, "a-b-c", "a1-2"])
def test_valid_names(name: str) -> None:
    assert name_problem(name) is None
    assert validate_project_name(name) == name


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "empty"),
        ("a" * 41, "41 characters"),
        ("Sales", "upper-case"),
        ("sales_dashboard", "'_'"),
        ("sales.dashboard", "'.'"),
        ("-sales", "start and end"),
        ("sales-", "start and end"),
        ("sales dash", "' '"),
        ("../etc", "'.' '/'"),
        ("café", "'é'"),
        ("2024-report", "start with a letter"),
    ],
)
def test_invalid_names_say_why(name: str, words: str) -> None:
    problem = name_problem(name)
    assert problem is not None and words in problem
    with pytest.raises(InvalidInput, match="a name such as 'sales-dashboard'"):
        validate_project_name(name)
