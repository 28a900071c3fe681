from graphprune.cli.main import main

main()
