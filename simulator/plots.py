"""Plots of a simulation run (matplotlib without pyplot, written atomically as PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simulator.figures import save_figure, subplots


def plot_simulation(logs: pd.DataFrame, path: str | Path) -> Path:
    """Four panels by day: activity, view rates, the questionnaire funnel, and response bias."""
    by_day = logs.groupby("day")
    days = np.asarray(sorted(logs["day"].unique()))
    sat = logs[logs["survey_shown"] & (logs["survey_type"] == "satisfaction")]
    answered = sat[sat["survey_submitted"]]
    fig, ax = subplots(2, 2, figsize=(11, 7), constrained_layout=True)

    a = ax[0, 0]
    a.bar(days, by_day["user_id"].nunique().to_numpy(), color="#8da0cb", label="daily active users")
    a.set_ylabel("daily active users")
    a2 = a.twinx()
    a2.plot(days, by_day.size().to_numpy() / 1e3, "o-", color="#333", label="impressions (k)")
    a2.set_ylabel("impressions (thousands)")
    a2.set_ylim(bottom=0)
    a.set_title("Activity")
    a.set_xlabel("day")

    a = ax[0, 1]
    for col, color in (("effective_view", "#1b9e77"), ("skip", "#d95f02"), ("like", "#7570b3")):
        a.plot(days, 100 * by_day[col].mean().to_numpy(), "o-", color=color, label=col.replace("_", " "))
    a.set_ylabel("% of impressions")
    a.set_title("Implicit and explicit feedback")
    a.set_xlabel("day")
    a.legend()

    a = ax[1, 0]
    funnel = [len(logs), int(logs["effective_view"].sum()), int(logs["survey_shown"].sum()),
              int(logs["survey_submitted"].sum())]
    labels = ["impressions", "effective views", "questionnaires shown", "answered"]
    a.barh(labels[::-1], funnel[::-1], color="#66a61e")
    a.set_xscale("log")
    for y, v in enumerate(funnel[::-1]):
        a.text(v, y, f" {v:,}", va="center")
    a.set_title("Questionnaire funnel (log scale)")

    a = ax[1, 1]
    naive = answered.groupby("day")["survey_answer"].apply(lambda s: (s == "like").mean())
    oracle_shown = sat.groupby("day")["true_p_satisfied"].mean()
    oracle_all = by_day["true_p_satisfied"].mean()
    a.plot(naive.index, 100 * naive.to_numpy(), "o-", color="#e7298a", label="survey like rate (respondents)")
    a.plot(oracle_shown.index, 100 * oracle_shown.to_numpy(), "s--", color="#333",
           label="oracle satisfaction (surveyed)")
    a.plot(oracle_all.index, 100 * oracle_all.to_numpy(), ":", color="#999", label="oracle satisfaction (all)")
    a.set_ylabel("%")
    a.set_xlabel("day")
    a.set_title("Response bias: what surveys say vs the truth")
    a.legend(fontsize=8)

    return save_figure(fig, path)
