// index.cu
#include "common.cuh"
