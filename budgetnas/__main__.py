from budgetnas.cli import main

main()
