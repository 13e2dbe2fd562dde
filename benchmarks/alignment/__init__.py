"""§3.3 alignment speed (python-Levenshtein vs an O(n·m) Python DP) and §4 answer-checking
agreement on the reference solutions."""
