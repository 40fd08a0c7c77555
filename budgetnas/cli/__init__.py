"""The ``budgetnas`` console script and the demo: the top of the house, it may import everything."""
