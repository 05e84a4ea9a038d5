from paramcalc.cli import main

main()
