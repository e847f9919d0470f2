"""The researcher's pages and APIs (rounds, DPO runs, checkpoints, leaderboard, exports), mounted at /research/."""
