from symbert.cli import main

main()
