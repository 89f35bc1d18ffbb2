from stillhouse.cli import main

main()
