"""The leaderboard: the page, its verdicts against budget, the README's generated figures."""
