"""The report's figures as text: a number, an interval with its bounds ("1.45x [1.38, 1.52]",
", wide" past +-5% of its value), or why the figure is missing; and markdown tables of them."""


def number(value, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def reason(row: dict | None) -> str | None:
    """Why a row has no figures ("-" for no row; a table cell cannot hold "|"), or None if it has them."""
    if row is None:
        return "-"
    return row["error"].replace("|", "/") if "error" in row else None


def interval(row: dict | None, key: str, digits: int = 2, suffix: str = "") -> str:
    """'1.45x [1.38, 1.52]' (', wide' past +-5%), or why the figure is missing."""
    missing = reason(row)
    if missing:
        return missing
    figure = row.get(key) or {}
    if "error" in figure:
        return figure["error"].replace("|", "/")
    if figure.get("low") is None:
        return number(figure.get("value"), digits, suffix) + " (one prompt)"
    return (f"{figure['value']:.{digits}f}{suffix} [{figure['low']:.{digits}f}, {figure['high']:.{digits}f}]"
            + (", wide" if figure["wide"] else ""))


def value(row: dict | None, key: str):
    """The row's figure at `key` (an interval's value), or None where there is none."""
    figure = None if row is None or "error" in row else row.get(key)
    return figure.get("value") if isinstance(figure, dict) else figure


def plain(row: dict | None, key: str, digits: int | None = None) -> str:
    """The row's figure at `key` as text, "-" where there is none."""
    figure = value(row, key)
    return "-" if figure is None else f"{figure:.{digits}f}" if digits is not None else str(figure)


def temperature_name(temperature: float) -> str:
    return "greedy" if temperature == 0 else f"temperature {temperature:g}"


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)
