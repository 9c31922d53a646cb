"""Your Nakama app.

Edit this file, commit and `git push`: the new version is live in about a second.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

st.set_page_config(page_title="My Nakama app", page_icon="🚀", layout="wide")

st.title("Hello from Nakama")
st.write(
    "This app was deployed from your repository. Change `app.py`, push, and reload this page. "
    "Add a package to `requirements.txt` and push: Nakama builds a new environment first."
)

days = st.slider("Days of data", min_value=7, max_value=365, value=90, step=1)
seed = st.number_input("Random seed", min_value=0, value=42, step=1)

rng = np.random.default_rng(int(seed))
dates = pd.date_range(end=pd.Timestamp.today().normalize(), periods=days, freq="D")
sales = pd.DataFrame(
    {
        "date": dates,
        "sales": (100 + rng.normal(0, 10, size=days).cumsum()).round(2),
        "visitors": rng.integers(200, 800, size=days),
    }
).set_index("date")

left, right = st.columns(2)
left.metric("Total sales", f"{sales['sales'].sum():,.0f}")
right.metric("Average visitors per day", f"{sales['visitors'].mean():,.0f}")

st.line_chart(sales["sales"])
with st.expander("Raw data"):
    st.dataframe(sales)
