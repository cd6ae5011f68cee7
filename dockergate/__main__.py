from dockergate.cli import main

main()
