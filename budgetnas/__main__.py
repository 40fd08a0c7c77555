from budgetnas.cli.main import main

main()
