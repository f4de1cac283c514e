from uhd_profile.cli.main import main

main()
