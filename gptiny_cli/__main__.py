from gptiny_cli.cli import main

main()
