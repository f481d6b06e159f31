// The Catch2 main of the unit and golden suites, compiled once.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
